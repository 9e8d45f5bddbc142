package sparkplug

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
	"google.golang.org/protobuf/proto"
)

// hostStateVersion is the version of the MarshalState encoding; UnmarshalState
// refuses any other so that an incompatible checkpoint is noticed, not misread.
const hostStateVersion = 1

// The checkpoint is JSON so that it can be inspected by hand, with each birth
// certificate (definitions plus last values) embedded as a Sparkplug payload:
// the codec already round-trips every datatype exactly, including NaN floats,
// DataSets and Templates, which plain JSON could not.
type hostStateJSON struct {
	Version int            `json:"version"`
	Nodes   []hostNodeJSON `json:"nodes"`
}

type hostNodeJSON struct {
	Group          string           `json:"group"`
	EdgeNode       string           `json:"edge_node"`
	Born           bool             `json:"born"`
	Online         bool             `json:"online"`
	LastBirth      time.Time        `json:"last_birth"`
	LastDeath      time.Time        `json:"last_death"`
	BdSeq          uint64           `json:"bd_seq"`
	HasBdSeq       bool             `json:"has_bd_seq"`
	LastSeq        uint8            `json:"last_seq"`
	Missing        []int            `json:"missing,omitempty"`
	SeqErrors      uint64           `json:"seq_errors"`
	Rebirths       uint64           `json:"rebirths"`
	RebirthPending bool             `json:"rebirth_pending"`
	Metrics        []byte           `json:"metrics"` // a Sparkplug payload, base64
	Devices        []hostDeviceJSON `json:"devices,omitempty"`
}

type hostDeviceJSON struct {
	Name      string    `json:"name"`
	Online    bool      `json:"online"`
	LastBirth time.Time `json:"last_birth"`
	LastDeath time.Time `json:"last_death"`
	Metrics   []byte    `json:"metrics"`
}

// MarshalState encodes the host's state (every node's and device's birth
// definitions, aliases, last values, bdSeq, seq and counters) so that it can be
// checkpointed with the consumer offset; UnmarshalState restores it. The
// encoding is deterministic: the same state always gives the same bytes. Last
// value timestamps keep millisecond precision, Sparkplug's own.
func (h *Host) MarshalState() ([]byte, error) {
	return h.MarshalStateFunc(nil)
}

// MarshalStateFunc is MarshalState for the edge nodes keep accepts (all if
// keep is nil): a host whose nodes are spread over several checkpoints (one
// per ingress partition, when several Millstream nodes share the work)
// writes each subset on its own and reads them back with MergeState.
func (h *Host) MarshalStateFunc(keep func(group, edgeNode string) bool) ([]byte, error) {
	st := hostStateJSON{Version: hostStateVersion, Nodes: []hostNodeJSON{}}
	keys := slices.SortedFunc(maps.Keys(h.nodes), func(a, b nodeKey) int {
		return cmp.Or(cmp.Compare(a.group, b.group), cmp.Compare(a.node, b.node))
	})
	for _, k := range keys {
		if keep != nil && !keep(k.group, k.node) {
			continue
		}
		n := h.nodes[k]
		metrics, err := encodeMetricSet(n.metrics)
		if err != nil {
			return nil, fmt.Errorf("sparkplug host: node %s/%s: %w", n.group, n.name, err)
		}
		nj := hostNodeJSON{
			Group: n.group, EdgeNode: n.name, Born: n.born, Online: n.online,
			LastBirth: n.lastBirth, LastDeath: n.lastDeath,
			BdSeq: n.bdSeq, HasBdSeq: n.hasBdSeq, LastSeq: n.lastSeq,
			SeqErrors: n.seqErrors, Rebirths: n.rebirths, RebirthPending: n.rebirthPending,
			Metrics: metrics,
		}
		for _, s := range n.missing {
			nj.Missing = append(nj.Missing, int(s))
		}
		for _, name := range slices.Sorted(maps.Keys(n.devices)) {
			d := n.devices[name]
			dm, err := encodeMetricSet(d.metrics)
			if err != nil {
				return nil, fmt.Errorf("sparkplug host: device %s/%s/%s: %w", n.group, n.name, name, err)
			}
			nj.Devices = append(nj.Devices, hostDeviceJSON{
				Name: name, Online: d.online, LastBirth: d.lastBirth, LastDeath: d.lastDeath, Metrics: dm,
			})
		}
		st.Nodes = append(st.Nodes, nj)
	}
	return json.Marshal(st)
}

// UnmarshalState replaces the host's state with one produced by MarshalState.
// On error the state is left unchanged.
func (h *Host) UnmarshalState(b []byte) error {
	nodes, err := decodeState(b)
	if err != nil {
		return err
	}
	h.nodes = nodes
	return nil
}

// MergeState adds the nodes of a state produced by MarshalState or
// MarshalStateFunc to the host, replacing the host's own state of those
// nodes and keeping every other node. It returns how many nodes it
// merged. On error the state is left unchanged.
func (h *Host) MergeState(b []byte) (int, error) {
	nodes, err := decodeState(b)
	if err != nil {
		return 0, err
	}
	maps.Copy(h.nodes, nodes)
	return len(nodes), nil
}

// DropNodes forgets the edge nodes (and their devices) drop accepts, as
// if never seen, and returns how many it dropped: the host hands them to
// another host that loads their checkpoint.
func (h *Host) DropNodes(drop func(group, edgeNode string) bool) int {
	dropped := 0
	for k := range h.nodes {
		if drop(k.group, k.node) {
			delete(h.nodes, k)
			dropped++
		}
	}
	return dropped
}

func decodeState(b []byte) (map[nodeKey]*hostNode, error) {
	var st hostStateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("sparkplug host: state: %w", err)
	}
	if st.Version != hostStateVersion {
		return nil, fmt.Errorf("sparkplug host: state version %d, want %d", st.Version, hostStateVersion)
	}
	nodes := map[nodeKey]*hostNode{}
	for _, nj := range st.Nodes {
		if nj.Group == "" || nj.EdgeNode == "" {
			return nil, errors.New("sparkplug host: state: node without group or edge node")
		}
		k := nodeKey{nj.Group, nj.EdgeNode}
		if nodes[k] != nil {
			return nil, fmt.Errorf("sparkplug host: state: node %s/%s twice", nj.Group, nj.EdgeNode)
		}
		ms, err := decodeMetricSet(nj.Metrics)
		if err != nil {
			return nil, fmt.Errorf("sparkplug host: state: node %s/%s: %w", nj.Group, nj.EdgeNode, err)
		}
		n := &hostNode{
			group: nj.Group, name: nj.EdgeNode, born: nj.Born, online: nj.Online,
			lastBirth: nj.LastBirth, lastDeath: nj.LastDeath,
			bdSeq: nj.BdSeq, hasBdSeq: nj.HasBdSeq, lastSeq: nj.LastSeq,
			seqErrors: nj.SeqErrors, rebirths: nj.Rebirths, rebirthPending: nj.RebirthPending,
			metrics: ms, devices: map[string]*hostDevice{},
		}
		for _, s := range nj.Missing {
			if s < 0 || s > 255 {
				return nil, fmt.Errorf("sparkplug host: state: node %s/%s: missing seq %d out of range", nj.Group, nj.EdgeNode, s)
			}
			n.missing = append(n.missing, uint8(s))
		}
		for _, dj := range nj.Devices {
			if dj.Name == "" || n.devices[dj.Name] != nil {
				return nil, fmt.Errorf("sparkplug host: state: node %s/%s: empty or repeated device %q", nj.Group, nj.EdgeNode, dj.Name)
			}
			dm, err := decodeMetricSet(dj.Metrics)
			if err != nil {
				return nil, fmt.Errorf("sparkplug host: state: device %s/%s/%s: %w", nj.Group, nj.EdgeNode, dj.Name, err)
			}
			n.devices[dj.Name] = &hostDevice{
				name: dj.Name, online: dj.Online, lastBirth: dj.LastBirth, lastDeath: dj.LastDeath, metrics: dm,
			}
		}
		nodes[k] = n
	}
	return nodes, nil
}

// encodeMetricSet writes a metric set as a birth-like Sparkplug payload: one
// metric per definition with its name, alias, datatype and birth properties,
// and its last value and timestamp when it has one.
func encodeMetricSet(ms *metricSet) ([]byte, error) {
	p := &pb.Payload{}
	for _, d := range ms.order {
		m := &pb.Payload_Metric{
			Name:       proto.String(d.name),
			Datatype:   proto.Uint32(uint32(d.dt)),
			Properties: d.rawProps,
		}
		if d.hasAlias {
			m.Alias = proto.Uint64(d.alias)
		}
		if d.hasLast {
			if err := SetMetricValue(m, d.dt, d.last); err != nil {
				return nil, fmt.Errorf("metric %q: %w", d.name, err)
			}
			m.Timestamp = proto.Uint64(uint64(d.lastTS.UnixMilli()))
		}
		p.Metrics = append(p.Metrics, m)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode metrics: %w", err)
	}
	return b, nil
}

func decodeMetricSet(b []byte) (*metricSet, error) {
	p, err := Decode(b)
	if err != nil {
		return nil, err
	}
	ms := newMetricSet()
	for _, m := range p.GetMetrics() {
		name := m.GetName()
		if name == "" || ms.byName[name] != nil {
			return nil, fmt.Errorf("empty or repeated metric name %q", name)
		}
		if m.Alias != nil && ms.byAlias[m.GetAlias()] != nil {
			return nil, fmt.Errorf("metric %q: repeated alias %d", name, m.GetAlias())
		}
		d := &metricDef{name: name, alias: m.GetAlias(), hasAlias: m.Alias != nil, dt: DataType(m.GetDatatype())}
		if m.Properties != nil {
			props, err := Properties(m.Properties)
			if err != nil {
				return nil, fmt.Errorf("metric %q: %w", name, err)
			}
			d.rawProps, d.props, d.unit = m.Properties, props, unitOf(props)
		}
		if m.Value != nil || m.GetIsNull() {
			v, err := MetricValue(m, d.dt)
			if err != nil {
				return nil, fmt.Errorf("metric %q: %w", name, err)
			}
			d.last, d.lastTS, d.hasLast = v, msTime(int64(m.GetTimestamp())), true
		}
		ms.order = append(ms.order, d)
		ms.byName[name] = d
		if d.hasAlias {
			ms.byAlias[d.alias] = d
		}
	}
	return ms, nil
}
