package sparkplug

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
)

// Errors of Host.Command; test with errors.Is.
var (
	// ErrUnknownTarget: the path names no metric of a born edge node or
	// device (never born, or not in its birth certificate).
	ErrUnknownTarget = errors.New("unknown command target")
	// ErrTargetOffline: the edge node or device is dead; a command sent now
	// would be lost or, worse, applied late.
	ErrTargetOffline = errors.New("command target offline")
)

// Command is a resolved NCMD or DCMD: where it goes and what it carries.
type Command struct {
	Topic   Topic
	Payload *pb.Payload
	// Metric is the metric name and Type its birth datatype, which typed the
	// value.
	Metric string
	Type   DataType
}

// Command builds the NCMD or DCMD that writes v to the metric at path, which
// is "group/edge_node[/device]/metric name" as the namespace shows Sparkplug
// metrics. The device is taken when the node has a device of that name with
// that metric; otherwise the rest of the path is a node metric's name. The
// value is typed with the metric's birth datatype: an integral float (JSON
// 42.0) becomes an integer, an integer becomes a float; anything else that
// does not fit is an error that says which datatype was expected.
//
// The metric is named, not aliased: every edge node must accept names in
// commands (aliases are optional), and a name cannot go stale after a rebirth
// that reassigned aliases.
func (h *Host) Command(path string, v Value, now time.Time) (Command, error) {
	parts := strings.Split(path, "/")
	if len(parts) < 3 {
		return Command{}, fmt.Errorf("%w %q: want group/edge_node[/device]/metric", ErrUnknownTarget, path)
	}
	n := h.nodes[nodeKey{parts[0], parts[1]}]
	if n == nil || !n.born {
		return Command{}, fmt.Errorf("%w %q: edge node %s/%s has not been born", ErrUnknownTarget, path, parts[0], parts[1])
	}
	t := Topic{Type: NCMD, Group: n.group, EdgeNode: n.name}
	var def *metricDef
	if len(parts) >= 4 {
		if d := n.devices[parts[2]]; d != nil && d.metrics != nil {
			if def = d.metrics.byName[strings.Join(parts[3:], "/")]; def != nil {
				if !d.online {
					return Command{}, fmt.Errorf("%w: device %s of edge node %s/%s is dead", ErrTargetOffline, d.name, n.group, n.name)
				}
				t.Type, t.Device = DCMD, d.name
			}
		}
	}
	if def == nil {
		def = n.metrics.byName[strings.Join(parts[2:], "/")]
	}
	if def == nil {
		return Command{}, fmt.Errorf("%w %q: no such metric in the birth certificates of edge node %s/%s", ErrUnknownTarget, path, n.group, n.name)
	}
	if !n.online {
		return Command{}, fmt.Errorf("%w: edge node %s/%s is dead", ErrTargetOffline, n.group, n.name)
	}
	v = commandValue(def.dt, v)
	ms := uint64(now.UnixMilli())
	m := &pb.Payload_Metric{Name: proto.String(def.name), Timestamp: proto.Uint64(ms), Datatype: proto.Uint32(uint32(def.dt))}
	if err := SetMetricValue(m, def.dt, v); err != nil {
		return Command{}, fmt.Errorf("metric %q: %w", def.name, err)
	}
	return Command{
		Topic:   t,
		Payload: &pb.Payload{Timestamp: proto.Uint64(ms), Metrics: []*pb.Payload_Metric{m}},
		Metric:  def.name,
		Type:    def.dt,
	}, nil
}

// commandValue adapts a value from a loosely typed source (JSON) to dt where
// that loses nothing: integral floats to integers, strings to DateTime.
func commandValue(dt DataType, v Value) Value {
	switch dt {
	case Int8, Int16, Int32, Int64:
		if v.Kind == KindFloat && v.Float == math.Trunc(v.Float) && math.Abs(v.Float) <= 1<<53 {
			return IntValue(int64(v.Float))
		}
	case UInt8, UInt16, UInt32, UInt64:
		if v.Kind == KindFloat && v.Float == math.Trunc(v.Float) && v.Float >= 0 && v.Float <= 1<<53 {
			return UintValue(uint64(v.Float))
		}
	case DateTime:
		switch v.Kind {
		case KindString:
			if t, err := time.Parse(time.RFC3339Nano, v.Str); err == nil {
				return TimeValue(t)
			}
		case KindInt:
			return TimeValue(time.UnixMilli(v.Int).UTC())
		}
	case Bytes, File:
		if v.Kind == KindString {
			return BytesValue([]byte(v.Str))
		}
	}
	return v
}
