package sparkplug

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
	"google.golang.org/protobuf/proto"
)

var hostNow = time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)

// birthMetric builds a birth metric: name, alias (negative for none), datatype, value.
func birthMetric(t testing.TB, name string, alias int64, dt DataType, v Value) *pb.Payload_Metric {
	t.Helper()
	m := &pb.Payload_Metric{Name: proto.String(name), Datatype: proto.Uint32(uint32(dt))}
	if alias >= 0 {
		m.Alias = proto.Uint64(uint64(alias))
	}
	if err := SetMetricValue(m, dt, v); err != nil {
		t.Fatal(err)
	}
	return m
}

// aliasMetric builds a DATA metric addressed by alias only, as edge nodes send
// them: no name, no datatype.
func aliasMetric(t testing.TB, alias uint64, dt DataType, v Value) *pb.Payload_Metric {
	t.Helper()
	m := &pb.Payload_Metric{Alias: proto.Uint64(alias)}
	if err := SetMetricValue(m, dt, v); err != nil {
		t.Fatal(err)
	}
	return m
}

func payload(seq int, metrics ...*pb.Payload_Metric) *pb.Payload {
	p := &pb.Payload{Metrics: metrics}
	if seq >= 0 {
		p.Seq = proto.Uint64(uint64(seq))
	}
	return p
}

func bdSeqMetric(t testing.TB, bd uint64) *pb.Payload_Metric {
	return birthMetric(t, BdSeqMetric, -1, UInt64, UintValue(bd))
}

func topicOf(typ MessageType, device string) Topic {
	return Topic{Type: typ, Group: "G", EdgeNode: "N", Device: device}
}

// nodeBirth is the NBIRTH of the scenario tests: bdSeq 3, Temperature (alias 1,
// Double, engUnit degC), Count (alias 2, Int32), Node Control/Rebirth (alias 3).
func nodeBirth(t testing.TB, bd uint64) *pb.Payload {
	t.Helper()
	temp := birthMetric(t, "Temperature", 1, Double, FloatValue(20.5))
	props, err := EncodeProperties([]Property{{Key: EngUnitProperty, Type: String, Value: StringValue("degC")}})
	if err != nil {
		t.Fatal(err)
	}
	temp.Properties = props
	p := payload(0,
		bdSeqMetric(t, bd),
		temp,
		birthMetric(t, "Count", 2, Int32, IntValue(-5)),
		birthMetric(t, "Node Control/Rebirth", 3, Boolean, BoolValue(false)),
	)
	p.Timestamp = proto.Uint64(1_700_000_000_000)
	return p
}

// deviceBirth is the DBIRTH of device D: Speed (alias 10, Float), State (alias 11, String).
func deviceBirth(t testing.TB, seq int) *pb.Payload {
	t.Helper()
	return payload(seq,
		birthMetric(t, "Speed", 10, Float, FloatValue(1.5)),
		birthMetric(t, "State", 11, String, StringValue("RUN")),
	)
}

// handle feeds one message and fails the test on error.
func handle(t testing.TB, h *Host, typ MessageType, device string, p *pb.Payload) HostResult {
	t.Helper()
	res, err := h.Handle(topicOf(typ, device), p, hostNow)
	if err != nil {
		t.Fatalf("%s: %v", typ, err)
	}
	return res
}

// bornHost returns a host that has seen NBIRTH (bdSeq 3) and DBIRTH of D (seq 1).
func bornHost(t testing.TB, opts HostOptions) *Host {
	t.Helper()
	h := NewHost(opts)
	if res := handle(t, h, NBIRTH, "", nodeBirth(t, 3)); len(res.Rebirths) != 0 || len(res.Dropped) != 0 {
		t.Fatalf("NBIRTH: %+v", res)
	}
	if res := handle(t, h, DBIRTH, "D", deviceBirth(t, 1)); len(res.Rebirths) != 0 || len(res.Dropped) != 0 {
		t.Fatalf("DBIRTH: %+v", res)
	}
	return h
}

func updateNames(us []MetricUpdate) string {
	var names []string
	for _, u := range us {
		n := u.Name
		if u.Device != "" {
			n = u.Device + ":" + n
		}
		names = append(names, n)
	}
	return strings.Join(names, ",")
}

func TestHostBirthThenData(t *testing.T) {
	h := NewHost(HostOptions{})
	res := handle(t, h, NBIRTH, "", nodeBirth(t, 3))
	if got, want := updateNames(res.Updates), "bdSeq,Temperature,Count,Node Control/Rebirth"; got != want {
		t.Fatalf("NBIRTH updates %q, want %q", got, want)
	}
	for _, u := range res.Updates {
		if !u.Birth || u.Stale || u.Group != "G" || u.EdgeNode != "N" || !u.Timestamp.Equal(ms(1_700_000_000_000)) {
			t.Errorf("birth update %+v", u)
		}
	}
	if u := res.Updates[1]; u.Unit != "degC" || u.Type != Double || u.Value.Float != 20.5 || u.Alias != 1 || !u.HasAlias {
		t.Errorf("Temperature birth %+v", u)
	}
	res = handle(t, h, DBIRTH, "D", deviceBirth(t, 1))
	if got, want := updateNames(res.Updates), "D:Speed,D:State"; got != want {
		t.Fatalf("DBIRTH updates %q, want %q", got, want)
	}

	// NDATA by alias: a metric timestamp, a null, and a payload timestamp.
	temp := aliasMetric(t, 1, Double, FloatValue(21.25))
	temp.Timestamp = proto.Uint64(1_700_000_001_000)
	count := aliasMetric(t, 2, Int32, Null())
	nd := payload(2, temp, count)
	nd.Timestamp = proto.Uint64(1_700_000_002_000)
	res = handle(t, h, NDATA, "", nd)
	if len(res.Rebirths) != 0 || len(res.Dropped) != 0 || len(res.Updates) != 2 {
		t.Fatalf("NDATA: %+v", res)
	}
	u := res.Updates[0]
	if u.Name != "Temperature" || u.Type != Double || !reflect.DeepEqual(u.Value, FloatValue(21.25)) || u.Unit != "degC" ||
		!u.Timestamp.Equal(ms(1_700_000_001_000)) || u.Birth || u.Stale {
		t.Errorf("Temperature update %+v", u)
	}
	if u := res.Updates[1]; u.Name != "Count" || u.Type != Int32 || !u.Value.IsNull() || !u.Timestamp.Equal(ms(1_700_000_002_000)) {
		t.Errorf("Count update %+v", u)
	}

	// DDATA by alias without any timestamp: the receive time. Flags pass through.
	speed := aliasMetric(t, 10, Float, FloatValue(2.5))
	speed.IsHistorical = proto.Bool(true)
	state := aliasMetric(t, 11, String, StringValue("STOP"))
	state.IsTransient = proto.Bool(true)
	res = handle(t, h, DDATA, "D", payload(3, speed, state))
	if len(res.Rebirths) != 0 || len(res.Updates) != 2 {
		t.Fatalf("DDATA: %+v", res)
	}
	if u := res.Updates[0]; u.Device != "D" || u.Name != "Speed" || u.Type != Float || u.Value.Float != 2.5 ||
		!u.Historical || !u.Timestamp.Equal(hostNow) {
		t.Errorf("Speed update %+v", u)
	}
	if u := res.Updates[1]; u.Name != "State" || u.Value.Str != "STOP" || !u.Transient {
		t.Errorf("State update %+v", u)
	}

	// DATA by name (no alias) resolves too.
	byName := &pb.Payload_Metric{Name: proto.String("Count")}
	if err := SetMetricValue(byName, Int32, IntValue(7)); err != nil {
		t.Fatal(err)
	}
	res = handle(t, h, NDATA, "", payload(4, byName))
	if len(res.Updates) != 1 || !reflect.DeepEqual(res.Updates[0].Value, IntValue(7)) || res.Updates[0].Alias != 2 {
		t.Errorf("NDATA by name: %+v", res)
	}

	nodes := h.Nodes()
	if len(nodes) != 1 {
		t.Fatalf("Nodes: %+v", nodes)
	}
	n := nodes[0]
	if !n.Online || !n.Born || n.BdSeq != 3 || !n.HasBdSeq || n.LastSeq != 4 || n.SeqErrors != 0 || n.Rebirths != 0 ||
		n.Metrics != 4 || !n.LastBirth.Equal(hostNow) || len(n.Devices) != 1 ||
		n.Devices[0] != (DeviceState{Name: "D", Online: true, LastBirth: hostNow, Metrics: 2}) {
		t.Errorf("Nodes: %+v", n)
	}
}

func TestHostValueNotMatchingBirthDatatype(t *testing.T) {
	h := bornHost(t, HostOptions{})
	bad := &pb.Payload_Metric{Alias: proto.Uint64(1), Value: &pb.Payload_Metric_StringValue{StringValue: "x"}}
	res := handle(t, h, NDATA, "", payload(2, bad, aliasMetric(t, 2, Int32, IntValue(1))))
	if len(res.Updates) != 1 || res.Updates[0].Name != "Count" || len(res.Dropped) != 1 ||
		res.Dropped[0].Name != "Temperature" || len(res.Rebirths) != 0 {
		t.Errorf("%+v", res)
	}
}

func TestHostRebirthRequests(t *testing.T) {
	type msg struct {
		typ    MessageType
		device string
		p      func(t testing.TB) *pb.Payload
	}
	data := func(seq int, alias uint64) func(t testing.TB) *pb.Payload {
		return func(t testing.TB) *pb.Payload {
			return payload(seq, aliasMetric(t, alias, Int32, IntValue(1)))
		}
	}
	ddata := func(seq int) func(t testing.TB) *pb.Payload {
		return func(t testing.TB) *pb.Payload { return payload(seq, aliasMetric(t, 10, Float, FloatValue(1))) }
	}
	nbirth := func(t testing.TB) *pb.Payload { return nodeBirth(t, 3) }
	dbirth := func(seq int) func(t testing.TB) *pb.Payload {
		return func(t testing.TB) *pb.Payload { return deviceBirth(t, seq) }
	}
	for _, tc := range []struct {
		name      string
		born      bool // start from bornHost (NBIRTH seq 0, DBIRTH seq 1)
		msgs      []msg
		rebirths  int    // requests issued in total
		reason    string // in the first request
		updates   int    // updates of the last message
		seqErrors uint64
	}{
		{name: "in order", born: true, msgs: []msg{{NDATA, "", data(2, 2)}, {DDATA, "D", ddata(3)}}, updates: 1},
		{name: "seq gap", born: true, msgs: []msg{{NDATA, "", data(5, 2)}}, rebirths: 1, reason: "seq gap: got 5, want 2", updates: 1, seqErrors: 1},
		{name: "seq gap requested once", born: true,
			msgs: []msg{{NDATA, "", data(5, 2)}, {NDATA, "", data(9, 2)}, {NDATA, "", data(10, 99)}}, rebirths: 1, reason: "seq gap", seqErrors: 2},
		{name: "duplicate seq is a gap when strict", born: true, msgs: []msg{{NDATA, "", data(1, 2)}}, rebirths: 1, reason: "seq gap: got 1, want 2", updates: 1, seqErrors: 1},
		{name: "missing seq", born: true, msgs: []msg{{NDATA, "", data(-1, 2)}}, rebirths: 1, reason: "without seq", updates: 1, seqErrors: 1},
		{name: "NDATA before NBIRTH", msgs: []msg{{NDATA, "", data(0, 2)}}, rebirths: 1, reason: "NDATA before NBIRTH"},
		{name: "DDATA before NBIRTH", msgs: []msg{{DDATA, "D", ddata(0)}}, rebirths: 1, reason: "DDATA before NBIRTH"},
		{name: "DBIRTH before NBIRTH", msgs: []msg{{DBIRTH, "D", dbirth(0)}, {NDATA, "", data(1, 2)}}, rebirths: 1, reason: "DBIRTH before NBIRTH"},
		{name: "DDATA before DBIRTH", msgs: []msg{{NBIRTH, "", nbirth}, {DDATA, "D", ddata(1)}}, rebirths: 1, reason: `DDATA before DBIRTH for device "D"`},
		{name: "unknown alias", born: true, msgs: []msg{{NDATA, "", data(2, 42)}}, rebirths: 1, reason: "unknown alias 42"},
		{name: "unknown device alias", born: true, msgs: []msg{{DDATA, "D", data(2, 1)}}, rebirths: 1, reason: `unknown alias 1 on device "D"`},
		{name: "unknown name", born: true, msgs: []msg{{NDATA, "", func(t testing.TB) *pb.Payload {
			m := &pb.Payload_Metric{Name: proto.String("Nope"), Value: &pb.Payload_Metric_IntValue{IntValue: 1}}
			return payload(2, m)
		}}}, rebirths: 1, reason: `unknown metric "Nope"`},
		{name: "NBIRTH clears the pending request", born: true,
			msgs: []msg{{NDATA, "", data(5, 2)}, {NBIRTH, "", nbirth}, {NDATA, "", data(3, 2)}}, rebirths: 2, reason: "seq gap", updates: 1, seqErrors: 2},
		{name: "NBIRTH with non-zero seq counted", msgs: []msg{{NBIRTH, "", func(t testing.TB) *pb.Payload {
			p := nodeBirth(t, 1)
			p.Seq = proto.Uint64(7)
			return p
		}}, {NDATA, "", data(8, 2)}}, updates: 1, seqErrors: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := NewHost(HostOptions{})
			if tc.born {
				h = bornHost(t, HostOptions{})
			}
			var reqs []RebirthRequest
			var last HostResult
			for _, m := range tc.msgs {
				last = handle(t, h, m.typ, m.device, m.p(t))
				reqs = append(reqs, last.Rebirths...)
			}
			if len(reqs) != tc.rebirths {
				t.Fatalf("rebirth requests %+v, want %d", reqs, tc.rebirths)
			}
			if tc.rebirths > 0 {
				if r := reqs[0]; r.Group != "G" || r.EdgeNode != "N" || !strings.Contains(r.Reason, tc.reason) {
					t.Errorf("request %+v, want reason containing %q", r, tc.reason)
				}
			}
			if len(last.Updates) != tc.updates {
				t.Errorf("last message updates %+v, want %d", last.Updates, tc.updates)
			}
			n := h.Nodes()[0]
			if n.Rebirths != uint64(tc.rebirths) || n.SeqErrors != tc.seqErrors {
				t.Errorf("node state %+v, want %d rebirths and %d seq errors", n, tc.rebirths, tc.seqErrors)
			}
		})
	}
}

func TestHostRebirthRequestMessage(t *testing.T) {
	r := RebirthRequest{Group: "G", EdgeNode: "N", Reason: "test"}
	if got := r.Topic().String(); got != "spBv1.0/G/NCMD/N" {
		t.Errorf("topic %q", got)
	}
	p := r.Payload(hostNow)
	b, err := Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	p, err = Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	m := p.GetMetrics()[0]
	v, err := MetricValue(m, DataType(m.GetDatatype()))
	if err != nil || m.GetName() != RebirthMetric || DataType(m.GetDatatype()) != Boolean || !reflect.DeepEqual(v, BoolValue(true)) ||
		p.GetTimestamp() != uint64(hostNow.UnixMilli()) {
		t.Errorf("payload %v, value %v, %v", p, v, err)
	}
}

func TestHostNodeDeath(t *testing.T) {
	h := bornHost(t, HostOptions{})
	handle(t, h, NDATA, "", payload(2, aliasMetric(t, 1, Double, FloatValue(22))))
	handle(t, h, DDATA, "D", payload(3, aliasMetric(t, 11, String, StringValue("IDLE"))))

	death := payload(-1, bdSeqMetric(t, 3))
	later := hostNow.Add(time.Minute)
	res, err := h.Handle(topicOf(NDEATH, ""), death, later)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := updateNames(res.Updates), "bdSeq,Temperature,Count,Node Control/Rebirth,D:Speed,D:State"; got != want {
		t.Fatalf("stale updates %q, want %q", got, want)
	}
	for _, u := range res.Updates {
		if !u.Stale || !u.Timestamp.Equal(later) {
			t.Errorf("update %+v is not stale at the death time", u)
		}
	}
	if v := res.Updates[1].Value; !reflect.DeepEqual(v, FloatValue(22)) || res.Updates[1].Unit != "degC" {
		t.Errorf("Temperature stale %+v, want the last value 22 degC", res.Updates[1])
	}
	if v := res.Updates[5].Value; !reflect.DeepEqual(v, StringValue("IDLE")) {
		t.Errorf("State stale value %v, want IDLE", v)
	}
	n := h.Nodes()[0]
	if n.Online || n.Devices[0].Online || !n.LastDeath.Equal(later) || !n.Devices[0].LastDeath.Equal(later) {
		t.Errorf("after NDEATH %+v", n)
	}

	// A second death is ignored; DATA after death asks for a rebirth.
	if res := handle(t, h, NDEATH, "", death); res.Ignored == "" || len(res.Updates) != 0 {
		t.Errorf("second NDEATH %+v", res)
	}
	res = handle(t, h, NDATA, "", payload(4, aliasMetric(t, 1, Double, FloatValue(1))))
	if len(res.Updates) != 0 || len(res.Rebirths) != 1 || len(res.Dropped) != 1 {
		t.Errorf("NDATA after death %+v", res)
	}

	// NBIRTH brings the node back; the device stays offline until its DBIRTH.
	handle(t, h, NBIRTH, "", nodeBirth(t, 4))
	n = h.Nodes()[0]
	if !n.Online || n.BdSeq != 4 || n.RebirthPending || n.Devices[0].Online {
		t.Errorf("after rebirth %+v", n)
	}
	handle(t, h, DBIRTH, "D", deviceBirth(t, 1))
	if n := h.Nodes()[0]; !n.Devices[0].Online {
		t.Errorf("after DBIRTH %+v", n)
	}
}

func TestHostStaleNodeDeathIgnored(t *testing.T) {
	h := NewHost(HostOptions{})
	handle(t, h, NBIRTH, "", nodeBirth(t, 3))
	handle(t, h, NDEATH, "", payload(-1, bdSeqMetric(t, 3)))
	handle(t, h, NBIRTH, "", nodeBirth(t, 4))
	// The will of the session with bdSeq 3 arrives late, after the new birth:
	// it must not kill the node of session 4.
	res := handle(t, h, NDEATH, "", payload(-1, bdSeqMetric(t, 3)))
	if !strings.Contains(res.Ignored, "stale NDEATH") || len(res.Updates) != 0 {
		t.Errorf("stale NDEATH %+v", res)
	}
	if n := h.Nodes()[0]; !n.Online {
		t.Errorf("node went offline on a stale NDEATH: %+v", n)
	}
	// The death of session 4, with bdSeq typed Int64 as some clients send it, counts.
	res = handle(t, h, NDEATH, "", payload(-1, birthMetric(t, BdSeqMetric, -1, Int64, IntValue(4))))
	if res.Ignored != "" || len(res.Updates) != 4 {
		t.Errorf("matching NDEATH %+v", res)
	}
}

func TestHostDeviceDeath(t *testing.T) {
	h := bornHost(t, HostOptions{})
	res := handle(t, h, DDEATH, "D", payload(2))
	if got, want := updateNames(res.Updates), "D:Speed,D:State"; got != want {
		t.Fatalf("DDEATH updates %q, want %q", got, want)
	}
	if u := res.Updates[0]; !u.Stale || u.Value.Float != 1.5 {
		t.Errorf("Speed %+v", u)
	}
	n := h.Nodes()[0]
	if !n.Online || n.Devices[0].Online || n.Rebirths != 0 {
		t.Errorf("after DDEATH %+v", n)
	}
	// DDATA for the dead device: a DATA before BIRTH.
	res = handle(t, h, DDATA, "D", payload(3, aliasMetric(t, 10, Float, FloatValue(1))))
	if len(res.Updates) != 0 || len(res.Rebirths) != 1 {
		t.Errorf("DDATA after DDEATH %+v", res)
	}
	// Node data goes on, with the shared sequence.
	res = handle(t, h, NDATA, "", payload(4, aliasMetric(t, 2, Int32, IntValue(3))))
	if len(res.Updates) != 1 || h.Nodes()[0].SeqErrors != 0 {
		t.Errorf("NDATA after DDEATH %+v", res)
	}
}

func TestHostSeqWraps(t *testing.T) {
	h := bornHost(t, HostOptions{})
	for i := 2; i < 2+300; i++ {
		res := handle(t, h, NDATA, "", payload(i%256, aliasMetric(t, 2, Int32, IntValue(int64(i)))))
		if len(res.Rebirths) != 0 || len(res.Updates) != 1 {
			t.Fatalf("seq %d: %+v", i%256, res)
		}
	}
	if n := h.Nodes()[0]; n.SeqErrors != 0 || n.LastSeq != uint8(301%256) {
		t.Errorf("%+v", n)
	}
}

func TestHostReorderWindow(t *testing.T) {
	seqs := func(t *testing.T, window int, ss ...int) (*Host, []HostResult) {
		h := bornHost(t, HostOptions{ReorderWindow: window})
		var out []HostResult
		for _, s := range ss {
			out = append(out, handle(t, h, NDATA, "", payload(s, aliasMetric(t, 2, Int32, IntValue(int64(s))))))
		}
		return h, out
	}
	t.Run("swap accepted", func(t *testing.T) {
		h, rs := seqs(t, 2, 3, 2, 4)
		for i, r := range rs {
			if len(r.Rebirths) != 0 || len(r.Updates) != 1 {
				t.Errorf("message %d: %+v", i, r)
			}
		}
		if n := h.Nodes()[0]; n.SeqErrors != 0 || n.LastSeq != 4 {
			t.Errorf("%+v", n)
		}
	})
	t.Run("across the wrap", func(t *testing.T) {
		h := bornHost(t, HostOptions{ReorderWindow: 3})
		for s := 2; s <= 254; s++ {
			handle(t, h, NDATA, "", payload(s, aliasMetric(t, 2, Int32, IntValue(1))))
		}
		for _, s := range []int{0, 255, 1} {
			if r := handle(t, h, NDATA, "", payload(s, aliasMetric(t, 2, Int32, IntValue(1)))); len(r.Rebirths) != 0 {
				t.Errorf("seq %d: %+v", s, r)
			}
		}
	})
	t.Run("missing past the window is a gap", func(t *testing.T) {
		h, rs := seqs(t, 2, 3, 4, 5)
		if len(rs[0].Rebirths)+len(rs[1].Rebirths) != 0 || len(rs[2].Rebirths) != 1 || !strings.Contains(rs[2].Rebirths[0].Reason, "seq 2 missing") {
			t.Errorf("%+v", rs)
		}
		if n := h.Nodes()[0]; n.SeqErrors != 1 {
			t.Errorf("%+v", n)
		}
	})
	t.Run("beyond the window", func(t *testing.T) {
		_, rs := seqs(t, 2, 5)
		if len(rs[0].Rebirths) != 1 {
			t.Errorf("%+v", rs)
		}
	})
	t.Run("duplicate dropped", func(t *testing.T) {
		h, rs := seqs(t, 2, 2, 2)
		if len(rs[1].Updates) != 0 || len(rs[1].Rebirths) != 0 || !strings.Contains(rs[1].Ignored, "duplicate") {
			t.Errorf("%+v", rs[1])
		}
		if n := h.Nodes()[0]; n.SeqErrors != 1 {
			t.Errorf("%+v", n)
		}
	})
	t.Run("late message keeps the newer last value", func(t *testing.T) {
		h := bornHost(t, HostOptions{ReorderWindow: 2})
		newer := aliasMetric(t, 2, Int32, IntValue(30))
		newer.Timestamp = proto.Uint64(1_700_000_002_000)
		older := aliasMetric(t, 2, Int32, IntValue(20))
		older.Timestamp = proto.Uint64(1_700_000_001_000)
		handle(t, h, NDATA, "", payload(3, newer))
		handle(t, h, NDATA, "", payload(2, older))
		res := handle(t, h, NDEATH, "", payload(-1, bdSeqMetric(t, 3)))
		if u := res.Updates[2]; u.Name != "Count" || !reflect.DeepEqual(u.Value, IntValue(30)) {
			t.Errorf("stale Count %+v, want 30", u)
		}
	})
}

func TestHostIgnoresCommandsAndRejectsBadTopics(t *testing.T) {
	h := bornHost(t, HostOptions{})
	for _, typ := range []MessageType{NCMD, DCMD, STATE} {
		res, err := h.Handle(Topic{Type: typ, Group: "G", EdgeNode: "N", Device: "D", HostID: "h"}, payload(9), hostNow)
		if err != nil || res.Ignored == "" || len(res.Rebirths) != 0 {
			t.Errorf("%s: %+v, %v", typ, res, err)
		}
	}
	for _, tp := range []Topic{{Type: NDATA, Group: "G"}, {Type: DDATA, Group: "G", EdgeNode: "N"}, {Type: "BOGUS", Group: "G", EdgeNode: "N"}} {
		if _, err := h.Handle(tp, payload(2), hostNow); err == nil {
			t.Errorf("%+v: no error", tp)
		}
	}
	if n := h.Nodes(); len(n) != 1 || n[0].LastSeq != 1 {
		t.Errorf("state changed: %+v", n)
	}
}

func TestHostBirthProblems(t *testing.T) {
	h := NewHost(HostOptions{})
	noType := &pb.Payload_Metric{Name: proto.String("NoType"), Value: &pb.Payload_Metric_IntValue{IntValue: 1}}
	res := handle(t, h, NBIRTH, "", payload(0,
		&pb.Payload_Metric{Alias: proto.Uint64(5), Datatype: proto.Uint32(uint32(Int32))},
		noType,
		birthMetric(t, "A", 1, Int32, IntValue(1)),
		birthMetric(t, "A", 2, Int32, IntValue(1)),
		birthMetric(t, "B", 1, Int32, IntValue(1)),
		birthMetric(t, "NaN", 3, Double, FloatValue(math.NaN())),
	))
	if len(res.Dropped) != 4 || updateNames(res.Updates) != "A,NaN" {
		t.Errorf("%+v", res)
	}
	if n := h.Nodes()[0]; n.Metrics != 2 || n.HasBdSeq {
		t.Errorf("%+v", n)
	}
}

func TestHostStateRoundTrip(t *testing.T) {
	h := bornHost(t, HostOptions{})
	handle(t, h, NDATA, "", payload(2, aliasMetric(t, 1, Double, FloatValue(math.NaN())), aliasMetric(t, 3, Boolean, Null())))
	handle(t, h, DDATA, "D", payload(3, aliasMetric(t, 10, Float, FloatValue(0.25))))
	handle(t, h, NDATA, "", payload(9, aliasMetric(t, 2, Int32, IntValue(1)))) // a gap: rebirth pending
	h.Handle(Topic{Type: NDATA, Group: "G", EdgeNode: "Unborn"}, payload(0), hostNow)

	b, err := h.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	if b2, _ := h.MarshalState(); !bytes.Equal(b, b2) {
		t.Fatal("MarshalState is not deterministic")
	}
	r := NewHost(HostOptions{})
	if err := r.UnmarshalState(b); err != nil {
		t.Fatal(err)
	}
	if b2, err := r.MarshalState(); err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("state changed in the round trip:\n%s\n%s", b, b2)
	}
	before, after := h.Nodes(), r.Nodes()
	if len(before) != len(after) {
		t.Fatalf("nodes %+v, want %+v", after, before)
	}
	for i := range before {
		if nodeString(before[i]) != nodeString(after[i]) {
			t.Errorf("node %d:\n%+v\nwant\n%+v", i, after[i], before[i])
		}
	}

	// The stream continues where it left off: no rebirth, aliases known.
	for _, host := range []*Host{h, r} {
		res := handle(t, host, DDATA, "D", payload(10, aliasMetric(t, 11, String, StringValue("RUN"))))
		if len(res.Rebirths) != 0 || len(res.Updates) != 1 || res.Updates[0].Name != "State" {
			t.Errorf("DDATA after restore: %+v", res)
		}
		res = handle(t, host, NDEATH, "", payload(-1, bdSeqMetric(t, 3)))
		if got := updateNames(res.Updates); got != "bdSeq,Temperature,Count,Node Control/Rebirth,D:Speed,D:State" {
			t.Errorf("stale after restore: %s", got)
		}
		if v := res.Updates[1].Value; !math.IsNaN(v.Float) || res.Updates[1].Unit != "degC" {
			t.Errorf("Temperature %+v", res.Updates[1])
		}
		if v := res.Updates[2].Value; !reflect.DeepEqual(v, IntValue(1)) {
			t.Errorf("Count %+v", res.Updates[2])
		}
		if v := res.Updates[3].Value; !v.IsNull() {
			t.Errorf("Node Control/Rebirth %+v, want null", res.Updates[3])
		}
		if v := res.Updates[4].Value; !reflect.DeepEqual(v, FloatValue(0.25)) {
			t.Errorf("Speed %+v", res.Updates[4])
		}
	}

	for _, bad := range []string{``, `{}`, `{"version":2}`, `{"version":1,"nodes":[{"group":""}]}`,
		`{"version":1,"nodes":[{"group":"G","edge_node":"N","metrics":"AAAA"}]}`,
		`{"version":1,"nodes":[{"group":"G","edge_node":"N"},{"group":"G","edge_node":"N"}]}`,
		`{"version":1,"nodes":[{"group":"G","edge_node":"N","missing":[300]}]}`} {
		if err := r.UnmarshalState([]byte(bad)); err == nil {
			t.Errorf("UnmarshalState(%s): no error", bad)
		}
	}
	if len(r.Nodes()) != 2 {
		t.Error("a failed UnmarshalState changed the state")
	}
}

// nodeString formats a node state for comparisons; time zones differ after a
// JSON round trip, instants do not.
func nodeString(n NodeState) string {
	n.LastBirth, n.LastDeath = n.LastBirth.UTC(), n.LastDeath.UTC()
	n.Devices = slices.Clone(n.Devices)
	for i := range n.Devices {
		n.Devices[i].LastBirth, n.Devices[i].LastDeath = n.Devices[i].LastBirth.UTC(), n.Devices[i].LastDeath.UTC()
	}
	return fmt.Sprintf("%+v", n)
}

// FuzzHost feeds a host that has seen a birth a fuzzed topic and a fuzzed
// payload, the payload also under every message type ops selects, and checks
// that nothing panics and that the state still round-trips.
func FuzzHost(f *testing.F) {
	enc := func(p *pb.Payload) []byte {
		b, err := Encode(p)
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add("spBv1.0/G/NDATA/N", enc(payload(2, aliasMetric(f, 1, Double, FloatValue(1)))), []byte{0, 1, 2})
	f.Add("spBv1.0/G/DDATA/N/D", enc(payload(2, aliasMetric(f, 10, Float, FloatValue(1)))), []byte{3, 4, 5, 6})
	f.Add("spBv1.0/G/NBIRTH/N", enc(nodeBirth(f, 9)), []byte{7, 0})
	f.Add("spBv1.0/G/DBIRTH/N/E", enc(deviceBirth(f, 2)), []byte{4, 5})
	f.Add("spBv1.0/G/NDEATH/N", enc(payload(-1, bdSeqMetric(f, 3))), []byte{1})
	f.Add("spBv1.0/STATE/h", []byte(`{"online":true}`), []byte{})
	types := []MessageType{NBIRTH, NDEATH, NDATA, NCMD, DBIRTH, DDEATH, DDATA, DCMD}
	f.Fuzz(func(t *testing.T, topic string, data []byte, ops []byte) {
		window := 0
		if len(ops) > 0 {
			window = int(ops[0] % 4)
		}
		h := bornHost(t, HostOptions{ReorderWindow: window})
		p, err := Decode(data)
		if err != nil {
			return
		}
		if tp, err := ParseTopic(topic); err == nil {
			h.Handle(tp, p, hostNow)
		}
		for _, op := range ops {
			typ := types[int(op)%len(types)]
			device := ""
			if typ.IsDevice() {
				device = []string{"D", "E"}[int(op/8)%2]
			}
			h.Handle(Topic{Type: typ, Group: "G", EdgeNode: "N", Device: device}, p, hostNow)
		}
		h.Nodes()
		b, err := h.MarshalState()
		if err != nil {
			t.Fatalf("MarshalState: %v", err)
		}
		r := NewHost(HostOptions{})
		if err := r.UnmarshalState(b); err != nil {
			t.Fatalf("UnmarshalState: %v\n%s", err, b)
		}
		if b2, err := r.MarshalState(); err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("state round trip differs: %v\n%s\n%s", err, b, b2)
		}
	})
}

// BenchmarkHostDDATA measures Handle on a DDATA of 10 aliased metrics of mixed
// types, already decoded (BenchmarkDecodeDDATA covers decoding).
func BenchmarkHostDDATA(b *testing.B) {
	types := []DataType{Double, Float, Int32, UInt64, Boolean, String, Int16, DateTime, Int64, UInt8}
	birth := payload(1)
	for i, dt := range types {
		m := ddata(10).Metrics[i]
		m.Name = proto.String(fmt.Sprintf("m%d", i))
		m.Datatype = proto.Uint32(uint32(dt))
		birth.Metrics = append(birth.Metrics, m)
	}
	h := NewHost(HostOptions{})
	handle(b, h, NBIRTH, "", payload(0, bdSeqMetric(b, 0)))
	handle(b, h, DBIRTH, "D", birth)
	p := ddata(10)
	for _, m := range p.Metrics {
		m.Datatype = nil
	}
	topic := topicOf(DDATA, "D")
	seq := uint64(1)
	b.ReportAllocs()
	for b.Loop() {
		seq++
		p.Seq = proto.Uint64(seq % 256)
		res, err := h.Handle(topic, p, hostNow)
		if err != nil || len(res.Updates) != 10 || len(res.Rebirths) != 0 {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(b.N*10)/b.Elapsed().Seconds(), "metrics/s")
}

// TestHostStateSubsetsMerge: a host split into per-node checkpoints
// (MarshalStateFunc) and merged back (MergeState) into hosts that already
// know other nodes keeps every node exactly, and DropNodes hands nodes
// over without touching the rest.
func TestHostStateSubsetsMerge(t *testing.T) {
	h := bornHost(t, HostOptions{})
	handle(t, h, NDATA, "", payload(2, aliasMetric(t, 1, Double, FloatValue(22))))
	other := Topic{Type: NBIRTH, Group: "G", EdgeNode: "Other"}
	if _, err := h.Handle(other, nodeBirth(t, 7), hostNow); err != nil {
		t.Fatal(err)
	}
	isN := func(g, n string) bool { return g == "G" && n == "N" }
	onlyN, err := h.MarshalStateFunc(isN)
	if err != nil {
		t.Fatal(err)
	}
	onlyOther, err := h.MarshalStateFunc(func(g, n string) bool { return !isN(g, n) })
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(onlyN, []byte(`"Other"`)) || !bytes.Contains(onlyOther, []byte(`"Other"`)) {
		t.Fatalf("subsets hold the wrong nodes:\n%s\n%s", onlyN, onlyOther)
	}

	// A host that knows a stale version of N and an unrelated node: the
	// merge replaces N, adds Other and keeps the unrelated node.
	r := NewHost(HostOptions{})
	if _, err := r.Handle(Topic{Type: NBIRTH, Group: "G", EdgeNode: "N"}, payload(0, bdSeqMetric(t, 1)), hostNow); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Handle(Topic{Type: NBIRTH, Group: "H", EdgeNode: "Elsewhere"}, payload(0, bdSeqMetric(t, 1)), hostNow); err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{onlyN, onlyOther} {
		if n, err := r.MergeState(b); err != nil || n != 1 {
			t.Fatalf("MergeState: %d nodes, %v", n, err)
		}
	}
	whole, _ := h.MarshalState()
	if got, _ := r.MarshalStateFunc(func(g, _ string) bool { return g == "G" }); !bytes.Equal(got, whole) {
		t.Fatalf("merged state differs:\n%s\nwant\n%s", got, whole)
	}
	if len(r.Nodes()) != 3 {
		t.Fatalf("nodes after merge: %+v", r.Nodes())
	}
	if _, err := r.MergeState([]byte(`{"version":1,"nodes":[{"group":"G","edge_node":"N","metrics":"AAAA"}]}`)); err == nil {
		t.Error("MergeState of a bad state: no error")
	}
	if len(r.Nodes()) != 3 {
		t.Error("a failed MergeState changed the state")
	}

	// N moved here keeps its sequence: the next NDATA resolves by alias.
	if res := handle(t, r, NDATA, "", payload(3, aliasMetric(t, 2, Int32, IntValue(4)))); len(res.Rebirths) != 0 || len(res.Updates) != 1 {
		t.Errorf("NDATA after merge: %+v", res)
	}
	if n := r.DropNodes(isN); n != 1 {
		t.Errorf("DropNodes dropped %d, want 1", n)
	}
	for _, s := range r.Nodes() {
		if s.EdgeNode == "N" {
			t.Error("N still known after DropNodes")
		}
	}
	if len(r.Nodes()) != 2 {
		t.Errorf("DropNodes took other nodes: %+v", r.Nodes())
	}
}
