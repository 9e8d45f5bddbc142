package uns

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/sparkplug"
)

// sparkplugPoints turns the Sparkplug host application's metric updates
// into points: path group/edge_node[/device]/metric name (a metric name's
// slashes make deeper levels, as Sparkplug folders do), quality stale after
// a death and bad for null values, unit from the engUnit property, source
// spb:group/edge_node[/device].
//
// Values without a scalar point type keep their content: an array becomes
// a string point holding the JSON array, a DataSet a string point holding
// {"columns","types","rows"}, and a Template instance one point per member
// metric under the metric's path (a UDT instance is a folder of tags),
// nested templates nesting further. Template definitions (schema, in
// births) are not values and make no point. It returns how many updates it
// could not turn into a point (property sets; names that do not make a
// valid path).
func sparkplugPoints(dst []Point, ups []sparkplug.MetricUpdate) ([]Point, int) {
	dropped := 0
	// The updates of one message share group, node and device: build and
	// check that part of the path once, and each metric's name on its own
	// (ValidatePath's rules are per segment, plus the total length).
	var group, node, device, src, source string
	srcOK := false
	for i := range ups {
		u := &ups[i]
		if i == 0 || u.Group != group || u.EdgeNode != node || u.Device != device {
			group, node, device = u.Group, u.EdgeNode, u.Device
			src = group + "/" + node
			if device != "" {
				src += "/" + device
			}
			source = "spb:" + src
			srcOK = ValidatePath(src) == nil
		}
		if !srcOK || ValidatePath(u.Name) != nil || len(src)+1+len(u.Name) > MaxPathBytes {
			dropped++
			continue
		}
		q := Good
		if u.Stale {
			q = Stale
		}
		var ok bool
		dst, ok = appendSparkplugValue(dst, Point{Path: src + "/" + u.Name, Time: u.Timestamp, Quality: q, Unit: u.Unit, Source: source}, u.Value, 0)
		if !ok {
			dropped++
		}
	}
	return dst, dropped
}

// appendSparkplugValue appends the point(s) of one value; p carries
// everything but the value.
func appendSparkplugValue(dst []Point, p Point, v sparkplug.Value, depth int) ([]Point, bool) {
	switch v.Kind {
	case sparkplug.KindNull:
		p.Quality = max(p.Quality, Bad)
	case sparkplug.KindInt:
		p.Value = IntValue(v.Int)
	case sparkplug.KindUint:
		p.Value = UintValue(v.Uint)
	case sparkplug.KindFloat:
		p.Value = FloatValue(v.Float)
	case sparkplug.KindBool:
		p.Value = BoolValue(v.Bool)
	case sparkplug.KindString:
		p.Value = StringValue(v.Str)
	case sparkplug.KindBytes:
		p.Value = BytesValue(v.Bytes)
	case sparkplug.KindTime:
		// A DateTime is milliseconds since the epoch on the wire too.
		p.Value = IntValue(v.Time.UnixMilli())
		if p.Unit == "" {
			p.Unit = "ms since epoch"
		}
	case sparkplug.KindIntArray, sparkplug.KindUintArray, sparkplug.KindFloatArray, sparkplug.KindBoolArray,
		sparkplug.KindStringArray, sparkplug.KindTimeArray, sparkplug.KindDataSet:
		p.Value = StringValue(string(appendSparkplugJSON(nil, v)))
	case sparkplug.KindTemplate:
		t := v.Template
		if t == nil || t.IsDefinition {
			return dst, true
		}
		if depth >= maxObjectDepth {
			return dst, false
		}
		all := true
		for _, m := range t.Metrics {
			mp := p
			mp.Path = p.Path + "/" + m.Name
			mp.Unit = unitOfProps(m.Properties)
			if m.Timestamp != 0 {
				mp.Time = time.UnixMilli(int64(m.Timestamp)).UTC()
			}
			if m.Name == "" || ValidatePath(mp.Path) != nil {
				all = false
				continue
			}
			var ok bool
			if dst, ok = appendSparkplugValue(dst, mp, m.Value, depth+1); !ok {
				all = false
			}
		}
		return dst, all
	default:
		return dst, false
	}
	return append(dst, p), true
}

func unitOfProps(props []sparkplug.Property) string {
	for _, pr := range props {
		if pr.Key == sparkplug.EngUnitProperty && pr.Value.Kind == sparkplug.KindString {
			return pr.Value.Str
		}
	}
	return ""
}

// appendSparkplugJSON writes an array or DataSet value as JSON: numbers as
// numbers (non-finite floats as null, which JSON has no other word for),
// DateTimes as milliseconds since the epoch.
func appendSparkplugJSON(b []byte, v sparkplug.Value) []byte {
	switch v.Kind {
	case sparkplug.KindNull:
		return append(b, "null"...)
	case sparkplug.KindInt:
		return strconv.AppendInt(b, v.Int, 10)
	case sparkplug.KindUint:
		return strconv.AppendUint(b, v.Uint, 10)
	case sparkplug.KindFloat:
		return appendJSONFloat(b, v.Float)
	case sparkplug.KindBool:
		return strconv.AppendBool(b, v.Bool)
	case sparkplug.KindString:
		return log.AppendJSONString(b, v.Str)
	case sparkplug.KindTime:
		return strconv.AppendInt(b, v.Time.UnixMilli(), 10)
	case sparkplug.KindBytes:
		return log.AppendJSONString(b, base64.StdEncoding.EncodeToString(v.Bytes))
	case sparkplug.KindIntArray:
		return appendJSONArray(b, len(v.Ints), func(b []byte, i int) []byte { return strconv.AppendInt(b, v.Ints[i], 10) })
	case sparkplug.KindUintArray:
		return appendJSONArray(b, len(v.Uints), func(b []byte, i int) []byte { return strconv.AppendUint(b, v.Uints[i], 10) })
	case sparkplug.KindFloatArray:
		return appendJSONArray(b, len(v.Floats), func(b []byte, i int) []byte { return appendJSONFloat(b, v.Floats[i]) })
	case sparkplug.KindBoolArray:
		return appendJSONArray(b, len(v.Bools), func(b []byte, i int) []byte { return strconv.AppendBool(b, v.Bools[i]) })
	case sparkplug.KindStringArray:
		return appendJSONArray(b, len(v.Strings), func(b []byte, i int) []byte { return log.AppendJSONString(b, v.Strings[i]) })
	case sparkplug.KindTimeArray:
		return appendJSONArray(b, len(v.Times), func(b []byte, i int) []byte { return strconv.AppendInt(b, v.Times[i].UnixMilli(), 10) })
	case sparkplug.KindDataSet:
		ds := v.DataSet
		if ds == nil {
			return append(b, "null"...)
		}
		b = append(b, `{"columns":`...)
		b = appendJSONArray(b, len(ds.Columns), func(b []byte, i int) []byte { return log.AppendJSONString(b, ds.Columns[i]) })
		b = append(b, `,"types":`...)
		b = appendJSONArray(b, len(ds.Types), func(b []byte, i int) []byte { return log.AppendJSONString(b, ds.Types[i].String()) })
		b = append(b, `,"rows":`...)
		b = appendJSONArray(b, len(ds.Rows), func(b []byte, i int) []byte {
			row := ds.Rows[i]
			return appendJSONArray(b, len(row), func(b []byte, j int) []byte { return appendSparkplugJSON(b, row[j]) })
		})
		return append(b, '}')
	}
	return append(b, "null"...)
}

func appendJSONArray(b []byte, n int, elem func([]byte, int) []byte) []byte {
	b = append(b, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = elem(b, i)
	}
	return append(b, ']')
}

func appendJSONFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

// HostStateTopic holds checkpoints of the Sparkplug host application state
// (births, aliases, sequence numbers, last values), each with the ingress
// positions it belongs to, so that a restart resumes without asking every
// edge node to rebirth. One partition; older checkpoints are deleted.
const HostStateTopic = "uns.sparkplug.state"

// headerPositions on a checkpoint is "partition:offset,..." of the ingress
// topic: every record before them is reflected in the state, and their
// points are durable.
const headerPositions = "uns.positions"

// sparkplug runs one Sparkplug record through the host application.
func (n *Normalizer) sparkplug(dst []Point, r *log.Record) ([]Point, error) {
	t, err := sparkplug.ParseTopic(string(r.Key))
	if err != nil {
		return dst, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	if t.Type == sparkplug.STATE {
		return dst, nil // host application state (JSON, ours or another host's): not a point
	}
	p, err := sparkplug.Decode(r.Value)
	if err != nil {
		return dst, fmt.Errorf("%w: sparkplug payload: %v", ErrPayload, err)
	}
	n.hostMu.Lock()
	res := &n.spRes
	err = n.host.HandleInto(res, t, p, r.Timestamp)
	n.hostMu.Unlock()
	if err != nil {
		return dst, fmt.Errorf("%w: %v", ErrPayload, err)
	}
	for _, rb := range res.Rebirths {
		n.m.rebirths.Add(1)
		n.log.Warn("sparkplug: asking an edge node to rebirth", "group", rb.Group, "edge_node", rb.EdgeNode, "reason", rb.Reason)
		n.requestRebirth(rb, r.Timestamp)
	}
	n.m.spbDropped.Add(uint64(len(res.Dropped)))
	dst, dropped := sparkplugPoints(dst, res.Updates)
	n.m.spbDropped.Add(uint64(dropped))
	return dst, nil
}

// checkpointHost writes the host state with the consumer's positions and
// deletes older checkpoints. The caller commits the positions afterwards.
func (n *Normalizer) checkpointHost(ctx context.Context, c *log.Consumer) error {
	n.hostMu.Lock()
	state, err := n.host.MarshalState()
	n.hostMu.Unlock()
	if err != nil {
		return fmt.Errorf("uns normaliser: sparkplug state: %w", err)
	}
	var pos []string
	for p, off := range c.Positions() {
		pos = append(pos, strconv.Itoa(int(p))+":"+strconv.FormatInt(off, 10))
	}
	rec := &log.Record{Topic: HostStateTopic, Timestamp: time.Now(), Value: state,
		Headers: []log.Header{{Key: headerPositions, Value: []byte(strings.Join(pos, ","))}}}
	if err := n.l.ProduceSync(ctx, rec); err != nil {
		return fmt.Errorf("uns normaliser: write sparkplug state: %w", err)
	}
	if rec.Offset > 0 {
		if err := n.l.DeleteRecordsBefore(ctx, HostStateTopic, 0, rec.Offset); err != nil {
			n.log.Warn("uns normaliser: could not delete older sparkplug checkpoints", "error", err)
		}
	}
	return nil
}

// loadHost restores the last checkpoint. If the process stopped after
// writing it but before committing its positions, the positions are
// committed now: the state already reflects those records.
func (n *Normalizer) loadHost(ctx context.Context) error {
	info, err := n.l.Topic(ctx, HostStateTopic)
	if err != nil {
		return fmt.Errorf("uns normaliser: %w", err)
	}
	p := info.Partitions[0]
	if p.End == p.Start {
		return nil
	}
	recs, err := n.l.Fetch(ctx, HostStateTopic, 0, p.End-1, log.FetchOptions{MaxRecords: 1})
	if err != nil || len(recs) == 0 {
		return fmt.Errorf("uns normaliser: read sparkplug state: %v", err)
	}
	n.hostMu.Lock()
	err = n.host.UnmarshalState(recs[0].Value)
	n.hostMu.Unlock()
	if err != nil {
		n.log.Error("uns normaliser: sparkplug state checkpoint unreadable; edge nodes will be asked to rebirth", "error", err)
		return nil
	}
	hv, _ := recs[0].HeaderValue(headerPositions)
	for _, kv := range strings.Split(string(hv), ",") {
		var part int32
		var off int64
		if _, err := fmt.Sscanf(kv, "%d:%d", &part, &off); err != nil {
			continue
		}
		cur, ok, err := n.l.CommittedOffset(ctx, NormalizerGroup, n.opts.Source, part)
		if err != nil {
			return fmt.Errorf("uns normaliser: %w", err)
		}
		if !ok || cur < off {
			if err := n.l.CommitOffset(ctx, NormalizerGroup, n.opts.Source, part, off); err != nil {
				return fmt.Errorf("uns normaliser: %w", err)
			}
		}
	}
	n.log.Info("sparkplug host state restored", "nodes", len(n.SparkplugNodes()))
	return nil
}

// SparkplugNodes is a snapshot of every edge node and device the host
// application knows (safe to call from any goroutine).
func (n *Normalizer) SparkplugNodes() []sparkplug.NodeState {
	n.hostMu.Lock()
	defer n.hostMu.Unlock()
	return n.host.Nodes()
}

// requestRebirth publishes the NCMD that asks an edge node for a new birth.
// It is best effort: a node that misses it is asked again at its next
// unresolvable message.
func (n *Normalizer) requestRebirth(rb sparkplug.RebirthRequest, now time.Time) {
	if n.opts.Publish == nil {
		return
	}
	b, err := sparkplug.Encode(rb.Payload(now))
	if err == nil {
		err = n.opts.Publish(rb.Topic().String(), b, false, 0)
	}
	if err != nil {
		n.log.Error("sparkplug: rebirth request not sent", "group", rb.Group, "edge_node", rb.EdgeNode, "error", err)
	}
}
