package sparkplug

import (
	"errors"
	"strings"
	"testing"
)

func TestHostCommand(t *testing.T) {
	h := bornHost(t, HostOptions{})
	cases := []struct {
		path   string
		v      Value
		topic  string
		metric string
		check  func(t *testing.T, c Command)
	}{
		{"G/N/Count", FloatValue(42), "spBv1.0/G/NCMD/N", "Count", func(t *testing.T, c Command) {
			if c.Type != Int32 || c.Payload.Metrics[0].GetIntValue() != 42 {
				t.Errorf("Count command %v", c.Payload)
			}
		}},
		{"G/N/Count", IntValue(-7), "spBv1.0/G/NCMD/N", "Count", func(t *testing.T, c Command) {
			if v, err := MetricValue(c.Payload.Metrics[0], Int32); err != nil || v.Int != -7 {
				t.Errorf("Count -7: %v %v", v, err)
			}
		}},
		{"G/N/Temperature", IntValue(21), "spBv1.0/G/NCMD/N", "Temperature", func(t *testing.T, c Command) {
			if c.Payload.Metrics[0].GetDoubleValue() != 21 {
				t.Errorf("Temperature %v", c.Payload)
			}
		}},
		{"G/N/Node Control/Rebirth", BoolValue(true), "spBv1.0/G/NCMD/N", "Node Control/Rebirth", nil},
		{"G/N/D/State", StringValue("STOP"), "spBv1.0/G/DCMD/N/D", "State", func(t *testing.T, c Command) {
			if c.Payload.Metrics[0].GetStringValue() != "STOP" || c.Payload.Metrics[0].GetDatatype() != uint32(String) {
				t.Errorf("State %v", c.Payload)
			}
		}},
		{"G/N/D/Speed", FloatValue(2.25), "spBv1.0/G/DCMD/N/D", "Speed", nil},
	}
	for _, c := range cases {
		cmd, err := h.Command(c.path, c.v, hostNow)
		if err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		if got := cmd.Topic.String(); got != c.topic {
			t.Errorf("%s: topic %s, want %s", c.path, got, c.topic)
		}
		m := cmd.Payload.Metrics[0]
		if m.GetName() != c.metric || m.Alias != nil || m.GetTimestamp() != uint64(hostNow.UnixMilli()) {
			t.Errorf("%s: metric %v", c.path, m)
		}
		if _, err := Encode(cmd.Payload); err != nil {
			t.Errorf("%s: encode: %v", c.path, err)
		}
		if c.check != nil {
			c.check(t, cmd)
		}
	}

	bad := []struct {
		path string
		v    Value
		is   error
		msg  string
	}{
		{"G/N", IntValue(1), ErrUnknownTarget, "want group/edge_node"},
		{"G/X/Count", IntValue(1), ErrUnknownTarget, "has not been born"},
		{"G/N/Nope", IntValue(1), ErrUnknownTarget, "no such metric"},
		{"G/N/D/Nope", IntValue(1), ErrUnknownTarget, "no such metric"},
		{"G/N/Count", FloatValue(1.5), nil, "Int32"},
		{"G/N/Count", IntValue(1 << 40), nil, "out of range"},
		{"G/N/D/State", IntValue(1), nil, "String"},
	}
	for _, b := range bad {
		_, err := h.Command(b.path, b.v, hostNow)
		if err == nil || (b.is != nil && !errors.Is(err, b.is)) || !strings.Contains(err.Error(), b.msg) {
			t.Errorf("%s = %v: error %v, want %v containing %q", b.path, b.v, err, b.is, b.msg)
		}
	}

	// A dead device, then a dead node, refuse commands.
	handle(t, h, DDEATH, "D", payload(2))
	if _, err := h.Command("G/N/D/State", StringValue("RUN"), hostNow); !errors.Is(err, ErrTargetOffline) {
		t.Errorf("command to a dead device: %v", err)
	}
	if _, err := h.Command("G/N/Count", IntValue(1), hostNow); err != nil {
		t.Errorf("node still alive: %v", err)
	}
	handle(t, h, NDEATH, "", payload(-1, bdSeqMetric(t, 3)))
	if _, err := h.Command("G/N/Count", IntValue(1), hostNow); !errors.Is(err, ErrTargetOffline) {
		t.Errorf("command to a dead node: %v", err)
	}
}
