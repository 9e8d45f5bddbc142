package sparkplug

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
	"unicode/utf8"

	pb "github.com/millstream/millstream/sparkplug/sparkplugb"
	"google.golang.org/protobuf/proto"
)

// MaxReorderWindow is the largest HostOptions.ReorderWindow. Sequence numbers
// wrap at 256, so a window must stay under half of that for "ahead" and
// "behind" to remain distinguishable.
const MaxReorderWindow = 127

// Well-known metric names of the Sparkplug 3.0 specification.
const (
	// BdSeqMetric is the birth/death sequence metric of NBIRTH and NDEATH.
	BdSeqMetric = "bdSeq"
	// RebirthMetric is the NCMD metric that asks an edge node to rebirth.
	RebirthMetric = "Node Control/Rebirth"
	// EngUnitProperty is the metric property holding the engineering unit.
	EngUnitProperty = "engUnit"
)

// HostOptions configures a Host.
type HostOptions struct {
	// ReorderWindow is how many sequence numbers a message may arrive out of
	// order and still be accepted without a rebirth. 0 (the default) is the
	// strict Sparkplug rule: every message must carry the previous seq + 1.
	// With a window W, a message up to W ahead is accepted and the skipped
	// numbers are remembered as missing; a missing message that arrives later
	// is accepted, and one still missing once the sequence has moved more than
	// W past it is a gap. Values above MaxReorderWindow are clamped.
	ReorderWindow int
}

// Host is the Sparkplug 3.0 host application state machine: it tracks every
// edge node and device seen, learns metric names, aliases and datatypes from
// NBIRTH and DBIRTH certificates, turns NDATA and DDATA into named, typed metric
// updates, checks bdSeq and seq, marks metrics stale on NDEATH and DDEATH, and
// says when an edge node must be asked to rebirth.
//
// Host is pure and deterministic: it starts no goroutines, does no I/O and never
// reads the clock (the receive time is an argument of Handle). The caller owns
// the MQTT side: it feeds Handle every message received on spBv1.0/#, publishes
// the returned RebirthRequests as NCMDs, and forwards the updates. This keeps
// the protocol logic testable message by message and lets the state be
// checkpointed together with the log offset (MarshalState) so that a restart
// resumes without asking every node to rebirth.
//
// The rules, from the Sparkplug 3.0 host application section:
//   - NBIRTH defines the node's metrics and its bdSeq (metric "bdSeq") and
//     resets the sequence: its seq must be 0. Every later message of the node,
//     DBIRTH, DDEATH, NDATA and DDATA alike, carries the previous seq + 1
//     (mod 256). NDEATH is the MQTT will, published by the broker, and has no seq.
//   - DBIRTH defines a device's metrics; the node must be online.
//   - NDATA/DDATA metrics are resolved by alias (else by name) to the birth's
//     name and datatype, and their values converted with that datatype.
//   - A seq gap, a DATA before its BIRTH, a DBIRTH before the NBIRTH, or an
//     unknown alias or name makes the host request a rebirth: once per node
//     until its next NBIRTH, since repeating it would only flood a node that is
//     already rebirthing. Metrics that cannot be resolved are not emitted.
//   - NDEATH whose bdSeq matches the current birth marks the node and its
//     devices offline and emits a stale update (last value, Stale set) for each
//     of their metrics. A different bdSeq is a late will from an older session
//     and is ignored; an NDEATH without bdSeq cannot be told apart and is
//     accepted. DDEATH does the same for one device.
//   - NBIRTH after a death brings the node back online; its devices stay
//     offline until their own DBIRTH, which the node must send next.
//
// Metrics named "Node Control/*" and "Properties/*" are ordinary metrics for
// the host: they are defined by the birth and emitted like any other.
//
// A Host is not safe for concurrent use.
type Host struct {
	window int
	nodes  map[nodeKey]*hostNode
}

type nodeKey struct{ group, node string }

// hostNode is the state of one edge node. It exists from the first message seen
// for the node, even a DATA before any birth, so that rebirth requests are
// counted and not repeated.
type hostNode struct {
	group, name    string
	born           bool // an NBIRTH has been seen (metrics are defined)
	online         bool
	lastBirth      time.Time
	lastDeath      time.Time
	bdSeq          uint64
	hasBdSeq       bool
	lastSeq        uint8
	missing        []uint8 // seqs skipped within the reorder window, oldest first
	seqErrors      uint64
	rebirths       uint64
	rebirthPending bool
	metrics        *metricSet
	devices        map[string]*hostDevice
}

type hostDevice struct {
	name      string
	online    bool
	lastBirth time.Time
	lastDeath time.Time
	metrics   *metricSet
}

// metricSet is the metric definitions of one birth certificate.
type metricSet struct {
	order   []*metricDef // birth order, for deterministic stale updates and checkpoints
	byName  map[string]*metricDef
	byAlias map[uint64]*metricDef
}

type metricDef struct {
	name     string
	alias    uint64
	hasAlias bool
	dt       DataType
	rawProps *pb.Payload_PropertySet // as received in the birth, for checkpoints
	props    []Property
	unit     string
	// The last current value: historical and transient metrics do not change
	// it, as the specification says they must not update the live tag.
	last    Value
	lastTS  time.Time
	hasLast bool
}

func newMetricSet() *metricSet {
	return &metricSet{byName: map[string]*metricDef{}, byAlias: map[uint64]*metricDef{}}
}

// HostResult is what one message produced.
type HostResult struct {
	// Updates are the metric values to emit, in message order.
	Updates []MetricUpdate
	// Rebirths are the rebirth requests the caller must publish (at most one).
	Rebirths []RebirthRequest
	// Dropped are metrics of the message that were not emitted and why (a value
	// that does not fit the birth datatype, a birth metric without a name...).
	// Unresolvable DATA metrics are listed here too, besides causing a rebirth.
	Dropped []DroppedMetric
	// Ignored is why the whole message was ignored (a stale NDEATH, a command,
	// a duplicate within the reorder window); empty when it was processed.
	Ignored string
}

// MetricUpdate is one metric value produced by the host.
type MetricUpdate struct {
	Group, EdgeNode string
	Device          string // empty for node metrics
	Name            string
	Alias           uint64 // meaningful when HasAlias
	HasAlias        bool
	Type            DataType // from the birth certificate
	Value           Value    // null for is_null
	// Timestamp is the metric's timestamp, else the payload's, else the receive
	// time; for stale updates it is the time the death was received.
	Timestamp  time.Time
	Birth      bool // the value comes from an NBIRTH or DBIRTH
	Stale      bool // the source died; Value is the last value known
	Historical bool // is_historical: not a live value, must not update the current tag
	Transient  bool // is_transient: must not be stored
	// Unit is the "engUnit" property of the message's metric, else of the birth.
	Unit string
	// Properties are the metric's properties in this message, else the birth's.
	Properties []Property
}

// RebirthRequest asks the caller to publish an NCMD with "Node Control/Rebirth"
// = true to the edge node (Topic and Payload build it).
type RebirthRequest struct {
	Group, EdgeNode string
	Reason          string
}

// Topic is the NCMD topic of the request.
func (r RebirthRequest) Topic() Topic {
	return Topic{Type: NCMD, Group: r.Group, EdgeNode: r.EdgeNode}
}

// Payload is the NCMD payload of the request, timestamped now.
func (r RebirthRequest) Payload(now time.Time) *pb.Payload {
	return &pb.Payload{
		Timestamp: proto.Uint64(uint64(now.UnixMilli())),
		Metrics: []*pb.Payload_Metric{{
			Name:      proto.String(RebirthMetric),
			Timestamp: proto.Uint64(uint64(now.UnixMilli())),
			Datatype:  proto.Uint32(uint32(Boolean)),
			Value:     &pb.Payload_Metric_BooleanValue{BooleanValue: true},
		}},
	}
}

// DroppedMetric is a metric of a message that produced no update.
type DroppedMetric struct {
	Name   string // as in the message or resolved from the birth; may be empty
	Alias  uint64
	Reason string
}

// NodeState is a snapshot of one edge node, for APIs and dashboards.
type NodeState struct {
	Group, EdgeNode string
	Online          bool
	Born            bool      // an NBIRTH has been seen
	LastBirth       time.Time // zero if never born
	LastDeath       time.Time // zero if never died
	BdSeq           uint64    // meaningful when HasBdSeq
	HasBdSeq        bool
	LastSeq         uint8
	SeqErrors       uint64 // gaps, duplicates and wrong birth seqs
	Rebirths        uint64 // rebirth requests issued
	RebirthPending  bool   // a rebirth was requested and no NBIRTH has come yet
	Metrics         int    // metrics defined by the NBIRTH
	Devices         []DeviceState
}

// DeviceState is a snapshot of one device of an edge node.
type DeviceState struct {
	Name      string
	Online    bool
	LastBirth time.Time
	LastDeath time.Time
	Metrics   int
}

// NewHost returns a host application that knows no node yet.
func NewHost(opts HostOptions) *Host {
	return &Host{window: min(max(opts.ReorderWindow, 0), MaxReorderWindow), nodes: map[nodeKey]*hostNode{}}
}

// Handle processes one message received on topic t with decoded payload p at
// receive time now. It returns the metric updates to emit and the rebirth
// requests to publish. Commands (NCMD, DCMD) and STATE messages are other hosts'
// business and are ignored. A nil payload is treated as empty. The error is
// non-nil only for a topic that does not name a node (or a device for device
// messages) in valid UTF-8; the host state is then unchanged.
func (h *Host) Handle(t Topic, p *pb.Payload, now time.Time) (HostResult, error) {
	var res HostResult
	err := h.HandleInto(&res, t, p, now)
	return res, err
}

// HandleInto is Handle writing into res, whose slices it truncates and
// reuses: a caller that handles message after message allocates its result
// slices once. res is reset first, also on error.
func (h *Host) HandleInto(res *HostResult, t Topic, p *pb.Payload, now time.Time) error {
	*res = HostResult{Updates: res.Updates[:0], Rebirths: res.Rebirths[:0], Dropped: res.Dropped[:0]}
	switch t.Type {
	case NCMD, DCMD, STATE:
		res.Ignored = fmt.Sprintf("%s is not for the host application", t.Type)
		return nil
	case NBIRTH, NDEATH, NDATA, DBIRTH, DDEATH, DDATA:
	default:
		return fmt.Errorf("sparkplug host: unknown message type %q", t.Type)
	}
	if t.Group == "" || t.EdgeNode == "" {
		return fmt.Errorf("sparkplug host: %s topic without group or edge node", t.Type)
	}
	if t.Type.IsDevice() && t.Device == "" {
		return fmt.Errorf("sparkplug host: %s topic without device", t.Type)
	}
	// MQTT topic names are UTF-8; refusing anything else keeps the
	// identifiers exact through the JSON checkpoint.
	if !utf8.ValidString(t.Group) || !utf8.ValidString(t.EdgeNode) || !utf8.ValidString(t.Device) {
		return fmt.Errorf("sparkplug host: %s topic is not valid UTF-8", t.Type)
	}
	if p == nil {
		p = &pb.Payload{}
	}
	n := h.node(t.Group, t.EdgeNode)
	switch t.Type {
	case NBIRTH:
		h.nbirth(n, p, now, res)
	case NDEATH:
		h.ndeath(n, p, now, res)
	default:
		h.nodeMessage(n, t, p, now, res)
	}
	return nil
}

func (h *Host) node(group, name string) *hostNode {
	k := nodeKey{group, name}
	n := h.nodes[k]
	if n == nil {
		n = &hostNode{group: group, name: name, metrics: newMetricSet(), devices: map[string]*hostDevice{}}
		h.nodes[k] = n
	}
	return n
}

func (h *Host) requestRebirth(n *hostNode, reason string, res *HostResult) {
	if n.rebirthPending {
		return
	}
	n.rebirthPending = true
	n.rebirths++
	res.Rebirths = append(res.Rebirths, RebirthRequest{Group: n.group, EdgeNode: n.name, Reason: reason})
}

func (h *Host) nbirth(n *hostNode, p *pb.Payload, now time.Time, res *HostResult) {
	ms := defineMetrics(n, "", p, now, res)
	n.born, n.online = true, true
	n.lastBirth = now
	n.metrics = ms
	n.rebirthPending = false
	n.missing = nil
	n.hasBdSeq = false
	if d := ms.byName[BdSeqMetric]; d != nil && d.hasLast {
		n.bdSeq, n.hasBdSeq = asUint(d.last)
	}
	// The birth restarts the sequence. A non-zero seq breaks the rule but the
	// certificate is still the node's truth: take it, count the error, and
	// continue from it rather than asking for a rebirth that would repeat it.
	seq := p.GetSeq()
	if p.Seq == nil || seq != 0 {
		n.seqErrors++
	}
	n.lastSeq = uint8(seq)
	// Devices must rebirth after their node; until their DBIRTH they are
	// offline and their DATA is a DATA before BIRTH.
	for _, d := range n.devices {
		d.online = false
	}
}

func (h *Host) ndeath(n *hostNode, p *pb.Payload, now time.Time, res *HostResult) {
	if !n.online {
		res.Ignored = "NDEATH for a node that is not online"
		return
	}
	for _, m := range p.GetMetrics() {
		if m.GetName() != BdSeqMetric {
			continue
		}
		dt := DataType(m.GetDatatype())
		if dt == Unknown {
			dt = UInt64
			if d := n.metrics.byName[BdSeqMetric]; d != nil {
				dt = d.dt
			}
		}
		v, err := MetricValue(m, dt)
		if err != nil {
			break
		}
		if b, ok := asUint(v); ok && n.hasBdSeq && b != n.bdSeq {
			res.Ignored = fmt.Sprintf("stale NDEATH: bdSeq %d, current birth has %d", b, n.bdSeq)
			return
		}
		break
	}
	n.online = false
	n.lastDeath = now
	n.missing = nil
	staleAll(n, "", n.metrics, now, res)
	for _, name := range slices.Sorted(maps.Keys(n.devices)) {
		d := n.devices[name]
		if d.online {
			d.online = false
			d.lastDeath = now
			staleAll(n, name, d.metrics, now, res)
		}
	}
}

// nodeMessage handles the messages that carry the node's seq: NDATA, DBIRTH,
// DDEATH and DDATA.
func (h *Host) nodeMessage(n *hostNode, t Topic, p *pb.Payload, now time.Time, res *HostResult) {
	if !n.online {
		h.requestRebirth(n, fmt.Sprintf("%s before NBIRTH", t.Type), res)
		dropAll(p, fmt.Sprintf("%s before NBIRTH", t.Type), res)
		return
	}
	if !h.checkSeq(n, p, res) {
		return
	}
	switch t.Type {
	case NDATA:
		h.data(n, "", n.metrics, p, now, res)
	case DBIRTH:
		d := n.devices[t.Device]
		if d == nil {
			d = &hostDevice{name: t.Device}
			n.devices[t.Device] = d
		}
		d.metrics = defineMetrics(n, t.Device, p, now, res)
		d.online = true
		d.lastBirth = now
	case DDEATH:
		d := n.devices[t.Device]
		if d == nil || !d.online {
			res.Ignored = "DDEATH for a device that is not online"
			return
		}
		d.online = false
		d.lastDeath = now
		staleAll(n, t.Device, d.metrics, now, res)
	case DDATA:
		d := n.devices[t.Device]
		if d == nil || !d.online {
			reason := fmt.Sprintf("DDATA before DBIRTH for device %q", t.Device)
			h.requestRebirth(n, reason, res)
			dropAll(p, reason, res)
			return
		}
		h.data(n, t.Device, d.metrics, p, now, res)
	}
}

// checkSeq applies the sequence rule to a message of an online node and reports
// whether the message should be processed. A gap requests a rebirth but the
// message is still processed: its metrics resolve against the current birth,
// and dropping them would lose data that is most likely right.
func (h *Host) checkSeq(n *hostNode, p *pb.Payload, res *HostResult) bool {
	if p.Seq == nil || p.GetSeq() > 255 {
		n.seqErrors++
		if p.Seq == nil {
			h.requestRebirth(n, "message without seq", res)
		} else {
			h.requestRebirth(n, fmt.Sprintf("seq %d out of range 0..255", p.GetSeq()), res)
		}
		return true
	}
	s := uint8(p.GetSeq())
	expected := n.lastSeq + 1
	ahead := int(s - expected)   // 0 in order, 1..window ahead
	behind := int(n.lastSeq - s) // 0 duplicate of the last, 1.. older
	switch {
	case ahead == 0:
		n.lastSeq = s
	case ahead <= h.window:
		for k := expected; k != s; k++ {
			n.missing = append(n.missing, k)
		}
		n.lastSeq = s
	case h.window > 0 && behind <= h.window:
		if i := slices.Index(n.missing, s); i >= 0 {
			n.missing = slices.Delete(n.missing, i, i+1)
			return true // a late message, within the window
		}
		n.seqErrors++
		res.Ignored = fmt.Sprintf("duplicate seq %d", s)
		return false
	default:
		n.seqErrors++
		h.requestRebirth(n, fmt.Sprintf("seq gap: got %d, want %d", s, expected), res)
		// Resynchronise so the next message is judged against this one.
		n.lastSeq = s
		n.missing = nil
		return true
	}
	// Messages still missing once the sequence has moved past the window will
	// not come back: that is a gap.
	for len(n.missing) > 0 && int(n.lastSeq-n.missing[0]) > h.window {
		n.seqErrors++
		h.requestRebirth(n, fmt.Sprintf("seq %d missing", n.missing[0]), res)
		n.missing = n.missing[1:]
	}
	return true
}

// defineMetrics builds the metric set of a birth certificate and emits its
// values.
func defineMetrics(n *hostNode, device string, p *pb.Payload, now time.Time, res *HostResult) *metricSet {
	ms := newMetricSet()
	for _, m := range p.GetMetrics() {
		name := m.GetName()
		drop := func(reason string) {
			res.Dropped = append(res.Dropped, DroppedMetric{Name: name, Alias: m.GetAlias(), Reason: reason})
		}
		if name == "" {
			drop("birth metric without a name")
			continue
		}
		if ms.byName[name] != nil {
			drop("duplicate name in birth")
			continue
		}
		if m.Alias != nil && ms.byAlias[m.GetAlias()] != nil {
			drop(fmt.Sprintf("alias %d already used by %q", m.GetAlias(), ms.byAlias[m.GetAlias()].name))
			continue
		}
		dt := DataType(m.GetDatatype())
		if _, known := pb.DataType_name[int32(dt)]; dt == Unknown || !known || dt == PropertySet || dt == PropertySetList {
			drop(fmt.Sprintf("birth metric without a valid datatype (%d)", m.GetDatatype()))
			continue
		}
		def := &metricDef{name: name, alias: m.GetAlias(), hasAlias: m.Alias != nil, dt: dt}
		if m.Properties != nil {
			props, err := Properties(m.Properties)
			if err != nil {
				drop(err.Error())
				continue
			}
			def.rawProps = proto.CloneOf(m.Properties)
			def.props = props
			def.unit = unitOf(props)
		}
		ms.order = append(ms.order, def)
		ms.byName[name] = def
		if def.hasAlias {
			ms.byAlias[def.alias] = def
		}
		u, ok := convert(n, device, def, m, p, now, res)
		if ok {
			u.Birth = true
			res.Updates = append(res.Updates, u)
		}
	}
	return ms
}

// data resolves and emits the metrics of an NDATA or DDATA.
func (h *Host) data(n *hostNode, device string, ms *metricSet, p *pb.Payload, now time.Time, res *HostResult) {
	// One update per metric is the common case; sizing the slice once saves
	// the regrowth copies of a large struct on the hot path.
	res.Updates = slices.Grow(res.Updates, len(p.GetMetrics()))
	for _, m := range p.GetMetrics() {
		var def *metricDef
		var what string
		switch {
		case m.Alias != nil:
			def = ms.byAlias[m.GetAlias()]
		case m.GetName() != "":
			def = ms.byName[m.GetName()]
		}
		if def == nil {
			switch {
			case m.Alias != nil:
				what = fmt.Sprintf("unknown alias %d", m.GetAlias())
			case m.GetName() != "":
				what = fmt.Sprintf("unknown metric %q", m.GetName())
			default:
				what = "metric without alias or name"
			}
			if device != "" {
				what += fmt.Sprintf(" on device %q", device)
			}
			h.requestRebirth(n, what, res)
			res.Dropped = append(res.Dropped, DroppedMetric{Name: m.GetName(), Alias: m.GetAlias(), Reason: what})
			continue
		}
		if u, ok := convert(n, device, def, m, p, now, res); ok {
			res.Updates = append(res.Updates, u)
		}
	}
}

// convert turns metric m, defined by def, into an update and records it as the
// last value; a value that does not fit the datatype is dropped.
func convert(n *hostNode, device string, def *metricDef, m *pb.Payload_Metric, p *pb.Payload, now time.Time, res *HostResult) (MetricUpdate, bool) {
	v, err := MetricValue(m, def.dt)
	if err != nil {
		res.Dropped = append(res.Dropped, DroppedMetric{Name: def.name, Alias: def.alias, Reason: err.Error()})
		return MetricUpdate{}, false
	}
	u := MetricUpdate{
		Group: n.group, EdgeNode: n.name, Device: device,
		Name: def.name, Alias: def.alias, HasAlias: def.hasAlias, Type: def.dt,
		Value:      v,
		Timestamp:  now,
		Historical: m.GetIsHistorical(),
		Transient:  m.GetIsTransient(),
		Unit:       def.unit,
		Properties: def.props,
	}
	switch {
	case m.Timestamp != nil:
		u.Timestamp = msTime(int64(m.GetTimestamp()))
	case p.Timestamp != nil:
		u.Timestamp = msTime(int64(p.GetTimestamp()))
	}
	if m.Properties != nil {
		// Properties sent with a DATA metric describe this value; a malformed
		// set is ignored rather than losing the value.
		if props, err := Properties(m.Properties); err == nil {
			u.Properties = props
			if unit := unitOf(props); unit != "" {
				u.Unit = unit
			}
		}
	}
	// A late message (reorder window) must not replace a newer last value.
	if !u.Historical && !u.Transient && (!def.hasLast || !u.Timestamp.Before(def.lastTS)) {
		def.last, def.lastTS, def.hasLast = v, u.Timestamp, true
	}
	return u, true
}

// staleAll emits a stale update carrying the last value of every metric of ms
// that has one.
func staleAll(n *hostNode, device string, ms *metricSet, now time.Time, res *HostResult) {
	if ms == nil {
		return
	}
	for _, def := range ms.order {
		if !def.hasLast {
			continue
		}
		res.Updates = append(res.Updates, MetricUpdate{
			Group: n.group, EdgeNode: n.name, Device: device,
			Name: def.name, Alias: def.alias, HasAlias: def.hasAlias, Type: def.dt,
			Value: def.last, Timestamp: now, Stale: true,
			Unit: def.unit, Properties: def.props,
		})
	}
}

func dropAll(p *pb.Payload, reason string, res *HostResult) {
	for _, m := range p.GetMetrics() {
		res.Dropped = append(res.Dropped, DroppedMetric{Name: m.GetName(), Alias: m.GetAlias(), Reason: reason})
	}
}

func unitOf(props []Property) string {
	for _, p := range props {
		if p.Key == EngUnitProperty && p.Value.Kind == KindString {
			return p.Value.Str
		}
	}
	return ""
}

func asUint(v Value) (uint64, bool) {
	switch v.Kind {
	case KindUint:
		return v.Uint, true
	case KindInt:
		if v.Int >= 0 {
			return uint64(v.Int), true
		}
	}
	return 0, false
}

// Nodes returns a snapshot of every node seen, sorted by group and node, with
// devices sorted by name.
func (h *Host) Nodes() []NodeState {
	out := make([]NodeState, 0, len(h.nodes))
	for _, n := range h.nodes {
		s := NodeState{
			Group: n.group, EdgeNode: n.name, Online: n.online, Born: n.born,
			LastBirth: n.lastBirth, LastDeath: n.lastDeath,
			BdSeq: n.bdSeq, HasBdSeq: n.hasBdSeq, LastSeq: n.lastSeq,
			SeqErrors: n.seqErrors, Rebirths: n.rebirths, RebirthPending: n.rebirthPending,
			Metrics: len(n.metrics.order),
		}
		for _, name := range slices.Sorted(maps.Keys(n.devices)) {
			d := n.devices[name]
			s.Devices = append(s.Devices, DeviceState{
				Name: name, Online: d.online, LastBirth: d.lastBirth, LastDeath: d.lastDeath,
				Metrics: len(d.metrics.order),
			})
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b NodeState) int {
		return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.EdgeNode, b.EdgeNode))
	})
	return out
}
