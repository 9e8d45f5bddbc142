package broker

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/millstream/millstream/log"
)

// Header names of ingress records. See doc.go.
const (
	// HeaderQoS is the QoS the message was published with: "0", "1" or "2".
	HeaderQoS = "mqtt.qos"
	// HeaderRetain is "true" when the retain flag was set, else "false".
	HeaderRetain = "mqtt.retain"
	// HeaderClientID is the publishing client's id.
	HeaderClientID = "mqtt.client_id"
	// HeaderReceivedAt is when the broker received the PUBLISH, RFC 3339 in
	// UTC with nanoseconds. The record timestamp is the same instant in ms.
	HeaderReceivedAt = "mqtt.received_at"
	// HeaderContentType is the MQTT 5 content type, present only when set.
	HeaderContentType = "mqtt.content_type"
	// HeaderUserPropertyPrefix prefixes each MQTT 5 user property: property
	// k=v becomes header "mqtt.user.k" with value v, in the order sent, keys
	// repeated as often as sent.
	HeaderUserPropertyPrefix = "mqtt.user."
	// HeaderWill is "true" on records of will messages (published by the
	// broker when a client disconnected ungracefully), absent otherwise.
	HeaderWill = "mqtt.will"
)

var (
	qosValues  = [3][]byte{[]byte("0"), []byte("1"), []byte("2")}
	valueTrue  = []byte("true")
	valueFalse = []byte("false")
)

// ingestHook appends every PUBLISH to the ingress topic before it is
// acknowledged or fanned out.
//
// Appends are pipelined per client: OnPublish (which mochi runs in the
// client's read loop) starts the append and returns at once, telling mochi to
// do nothing more with the packet, so the client's next PUBLISH is read while
// the first is still being written: one client with many messages in flight
// fills a group commit on its own, as many clients do together. The client's
// acker takes finished appends strictly in the order they were received; its
// fanner writes their PUBACKs ([MQTT-4.6.0-2]: in order; drainFast, or a
// drain worker when the write could wait) and then fans the messages out
// through an inline client, so subscribers see each publisher's messages in
// order whatever order the log completes them in (partitions complete
// independently).
//
//   - QoS 1: acknowledged only once durable. A client has at most
//     mqtt.limits.max_inflight appends in flight; beyond that OnPublish waits,
//     which stops reading from the client: backpressure, not loss.
//   - QoS 2: the read loop waits until the append is durable and everything
//     before it has been handed back, then lets mochi run the PUBREC/PUBREL
//     exchange as usual. (mochi's per-client inflight store must only be
//     written from the client's own goroutine: Inflight.NextImmediate takes
//     its read lock twice, so a writer on another goroutine can deadlock it.)
//   - QoS 0: appended without waiting for durability and fanned out at once,
//     unless earlier messages of the same client are still in flight: then it
//     waits its turn. Produce still blocks while the log's buffers are full.
//     Failed appends are counted in qos0_dropped_total.
//   - Append failed: no acknowledgement. MQTT 5 clients get PUBACK/PUBREC with
//     a reason code >= 0x80; MQTT 3.1.1 has no negative acknowledgement, so
//     the connection is closed and the client resends after reconnecting.
type ingestHook struct {
	mqtt.HookBase
	b     *Broker
	topic string
	// partitions of the ingress topic, read at Start; Sparkplug messages
	// are placed by edge node (IngressPartitionKey) when it is above 1.
	partitions int32
	pool       sync.Pool
	ackers     sync.Map       // *mqtt.Client -> *acker
	fanout     *mqtt.Client   // inline client through which queued messages are fanned out
	pending    sync.WaitGroup // appends not yet reported (and, for queued ones, handed back)
	idle       chan *acker    // unbuffered: idle drain workers receive here
	fanners    []*fanner      // see fanner; made by newFanners
	nextFanner atomic.Uint32
	dropLog    rateLimit
	failLog    rateLimit
}

// reinjectMark marks a packet handed back to mochi after its append. Packets
// read from the network always have zero Mods (mochi sets them only on the
// copies it encodes), so a client cannot forge the mark. The publisher's
// client id rides in Connect.ClientIdentifier (unused in a PUBLISH) because
// mochi overwrites Origin with the inline client's id, and Origin is what
// MQTT 5 no-local subscriptions compare against.
const reinjectMark = 0xFFFFFFF7

func (h *ingestHook) ID() string { return "millstream-ingest" }

func (h *ingestHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublish, mqtt.OnWillSent, mqtt.OnPacketSent, mqtt.OnPublishDropped, mqtt.OnDisconnect:
		return true
	}
	return false
}

// ingressRecord is a record with room for its usual headers, allocated once
// and reused through a pool, so OnPublish does not allocate in the common
// case. It is returned to the pool only after the log reported success: a
// record whose append failed may still be referenced by the log.
type ingressRecord struct {
	rec  log.Record
	hdrs [6]log.Header
	ts   [40]byte
	// received is when the PUBLISH was read, to the nanosecond: the log
	// keeps record timestamps in milliseconds and truncates rec.Timestamp,
	// which would overstate the append wait by up to a millisecond.
	received time.Time
	// durable is when the log reported the append (queued appends only).
	durable time.Time
	h       *ingestHook
	done    func(*log.Record, error) // promise for QoS 0 and wills, bound once

	// For appends queued on a client's acker.
	a        *acker
	pk       packets.Packet
	err      error
	finished bool
	counted  bool                     // by countAcked
	queued   func(*log.Record, error) // promise for queued appends, bound once
	turn     chan struct{}            // QoS 2: closed when it is this message's turn
}

func (h *ingestHook) get() *ingressRecord {
	if ir, ok := h.pool.Get().(*ingressRecord); ok {
		return ir
	}
	ir := &ingressRecord{h: h}
	ir.done = ir.asyncDone
	ir.queued = ir.queuedDone
	return ir
}

func (h *ingestHook) put(ir *ingressRecord) {
	ir.rec = log.Record{}
	clear(ir.hdrs[:])
	ir.a, ir.pk, ir.err, ir.finished, ir.counted, ir.turn = nil, packets.Packet{}, nil, false, false, nil
	h.pool.Put(ir)
}

// IngressPartitionKey is what picks the ingress partition of a message
// published on topic: the topic itself, except for Sparkplug B, where it is
// "spBv1.0/{group}/{edge_node}". A Sparkplug edge node numbers the messages
// of the node and all its devices in one sequence, and a device's DBIRTH
// must be read after its node's NBIRTH, so everything of one edge node
// shares a partition and stays in order. The record key stays the topic.
func IngressPartitionKey(topic string) string {
	const prefix = "spBv1.0/"
	if !strings.HasPrefix(topic, prefix) {
		return topic
	}
	// spBv1.0/{group}/{type}/{node}[/{device}]
	rest := topic[len(prefix):]
	g := strings.IndexByte(rest, '/')
	if g < 0 {
		return topic
	}
	t := strings.IndexByte(rest[g+1:], '/')
	if t < 0 {
		return topic // spBv1.0/STATE/{host}: one message kind, its own key
	}
	node := rest[g+1+t+1:]
	if d := strings.IndexByte(node, '/'); d >= 0 {
		node = node[:d]
	}
	return topic[:len(prefix)+g+1] + node
}

// bytesOf views a string as bytes without copying. The log never modifies
// record bytes, and strings are immutable, so sharing is safe.
func bytesOf(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}

func (ir *ingressRecord) fill(topic string, clientID string, pk *packets.Packet, now time.Time, will bool) {
	ir.received = now
	ir.rec = log.Record{
		Topic:     topic,
		Timestamp: now,
		Key:       bytesOf(pk.TopicName),
		Value:     pk.Payload,
	}
	if n := ir.h.partitions; n > 1 {
		if k := IngressPartitionKey(pk.TopicName); len(k) != len(pk.TopicName) {
			ir.rec.Partition, ir.rec.PartitionSet = log.PartitionForKey(bytesOf(k), n), true
		}
	}
	hs := ir.hdrs[:0]
	hs = append(hs,
		log.Header{Key: HeaderQoS, Value: qosValues[pk.FixedHeader.Qos%3]},
		log.Header{Key: HeaderRetain, Value: valueFalse},
		log.Header{Key: HeaderClientID, Value: bytesOf(clientID)},
		log.Header{Key: HeaderReceivedAt, Value: now.UTC().AppendFormat(ir.ts[:0], time.RFC3339Nano)},
	)
	if pk.FixedHeader.Retain {
		hs[1].Value = valueTrue
	}
	if ct := pk.Properties.ContentType; ct != "" {
		hs = append(hs, log.Header{Key: HeaderContentType, Value: bytesOf(ct)})
	}
	for _, up := range pk.Properties.User {
		hs = append(hs, log.Header{Key: HeaderUserPropertyPrefix + up.Key, Value: bytesOf(up.Val)})
	}
	if will {
		hs = append(hs, log.Header{Key: HeaderWill, Value: valueTrue})
	}
	ir.rec.Headers = hs
}

func (h *ingestHook) countDrop(err error) {
	h.b.metrics.qos0Dropped.Add(1)
	if h.dropLog.allow() {
		h.b.logger.Warn("QoS 0 message not stored: append to the log failed (counted in millstream_mqtt_qos0_dropped_total)",
			"topic", h.topic, "error", err)
	}
}

func (ir *ingressRecord) asyncDone(_ *log.Record, err error) {
	h := ir.h
	if err != nil {
		h.countDrop(err)
	} else {
		h.b.metrics.appended.Add(1)
		h.put(ir)
	}
	h.pending.Done()
}

func (h *ingestHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.Mods.MaxSize == reinjectMark {
		// Appended already: let mochi retain and fan it out.
		pk.Mods.MaxSize = 0
		pk.Origin, pk.Connect.ClientIdentifier = pk.Connect.ClientIdentifier, ""
		return pk, nil
	}
	now := time.Now()
	if ls := h.b.metrics.byName[cl.Net.Listener]; ls != nil {
		ls.msgsIn.Add(1)
	}
	ir := h.get()
	ir.fill(h.topic, cl.ID, &pk, now, false)
	var a *acker
	if !cl.Net.Inline {
		a = h.ackerFor(cl)
	}
	// Inline publishes (from inside the process) have nobody to
	// acknowledge; QoS 0 of an idle client overtakes nothing.
	if a == nil || (pk.FixedHeader.Qos == 0 && a.idle()) {
		h.pending.Add(1)
		h.b.log.Produce(h.b.ctx, &ir.rec, ir.done)
		return pk, nil
	}
	// Once enqueued, ir belongs to the acker (which recycles QoS 1/0
	// records): keep what is needed here in locals.
	var turn chan struct{}
	if pk.FixedHeader.Qos == 2 {
		turn = make(chan struct{})
		ir.turn = turn
	}
	if err := a.enqueue(ir, pk); err != nil {
		h.put(ir)
		h.fail(cl, pk, err)
		return pk, packets.ErrRejectPacket
	}
	if turn == nil {
		return pk, packets.ErrRejectPacket // the acker acknowledges and fans out
	}
	<-turn
	if err := ir.err; err != nil {
		h.fail(cl, pk, err)
		return pk, packets.ErrRejectPacket // the failed record may still be referenced by the log
	}
	h.put(ir)
	return pk, nil // mochi sends the PUBREC and fans out
}

// handlesInline reports whether handling pk cannot block, so that the event
// loop, which reads every plain TCP connection, may handle it (see
// eventLoop): a PUBACK, or a valid QoS 0/1 PUBLISH that the ACL allows (an
// invalid or denied one may be answered with a direct write, which waits for
// a client that does not read) from a client with a free in-flight slot
// (OnPublish waits for one otherwise). Only the connection's reader
// enqueues for it, so a free slot stays free until its OnPublish. mochi
// validates the packet and checks the ACL again; both are cheap, and with no
// ACL configured the check is a nil test.
func (h *ingestHook) handlesInline(cl *mqtt.Client, pk *packets.Packet) bool {
	switch pk.FixedHeader.Type {
	case packets.Puback:
		return true
	case packets.Publish:
		if pk.FixedHeader.Qos > 1 || pk.PublishValidate(h.b.srv.Options.Capabilities.TopicAliasMaximum) != packets.CodeSuccess {
			return false
		}
		if acl := h.b.access.acl; acl != nil && !acl.allowPublish(cl.Properties.Username, pk.TopicName) {
			return false
		}
		a := h.ackerFor(cl)
		return len(a.slots) < cap(a.slots)
	}
	return false
}

// fail refuses a QoS 1/2 PUBLISH whose append failed.
func (h *ingestHook) fail(cl *mqtt.Client, pk packets.Packet, err error) {
	h.b.metrics.appendErrors.Add(1)
	if h.failLog.allow() {
		h.b.logger.Error("MQTT PUBLISH not acknowledged: append to the log failed",
			"client", cl.ID, "topic", pk.TopicName, "qos", pk.FixedHeader.Qos, "protocol", cl.Properties.ProtocolVersion, "error", err)
	}
	if cl.Properties.ProtocolVersion == 5 {
		code := appendFailureCode(err)
		ack := packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    pk.PacketID,
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: "message not stored: " + code.Reason},
		}
		if pk.FixedHeader.Qos == 2 {
			ack.FixedHeader.Type = packets.Pubrec
		}
		_ = cl.WritePacket(ack)
	} else {
		// MQTT 3.1.1 cannot refuse a PUBLISH: closing the connection leaves
		// the message unacknowledged, so the client sends it again.
		cl.Stop(errors.New("append to log failed; connection closed so the client resends"))
	}
}

// acker hands one client's appended packets back to mochi in the order they
// were received.
type acker struct {
	h     *ingestHook
	cl    *mqtt.Client
	slots chan struct{} // one per append in flight: bounds them at the receive maximum

	f *fanner // fans out this client's messages, in order

	mu       sync.Mutex
	q        []*ingressRecord // in flight or waiting to be handed back, oldest first
	handed   int              // q[:handed] are acknowledged and queued for fan-out
	draining bool             // a drain goroutine is running
}

func (h *ingestHook) ackerFor(cl *mqtt.Client) *acker {
	if a, ok := h.ackers.Load(cl); ok {
		return a.(*acker)
	}
	f := h.fanners[int(h.nextFanner.Add(1))%len(h.fanners)]
	a := &acker{h: h, cl: cl, f: f, slots: make(chan struct{}, max(1, int(h.b.access.inflight)))}
	actual, _ := h.ackers.LoadOrStore(cl, a)
	return actual.(*acker)
}

// OnDisconnect forgets the client's acker; appends still in flight keep it
// and are handed back (fanned out) when they finish.
func (h *ingestHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.ackers.Delete(cl)
}

// idle reports whether nothing of the client is in flight, so a QoS 0
// message may be fanned out at once without overtaking earlier messages.
func (a *acker) idle() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.q) == 0
}

// enqueue starts the append of ir. It waits while the client has the
// maximum number of appends in flight.
func (a *acker) enqueue(ir *ingressRecord, pk packets.Packet) error {
	select {
	case a.slots <- struct{}{}:
	default:
		a.h.b.metrics.appendBackpressure.Add(1)
		select {
		case a.slots <- struct{}{}:
		case <-a.h.b.ctx.Done():
			return log.ErrClosed
		}
	}
	ir.a, ir.pk = a, pk
	a.mu.Lock()
	a.q = append(a.q, ir)
	a.mu.Unlock()
	a.h.pending.Add(1)
	a.h.b.log.Produce(a.h.b.ctx, &ir.rec, ir.queued)
	return nil
}

// queuedDone is the promise of a queued append. Promises must not block (the
// log's writer calls them between fsyncs), so the acknowledgement is written
// by the client's fanner or a drain worker (runDrain).
func (ir *ingressRecord) queuedDone(_ *log.Record, err error) {
	a := ir.a
	if ir.pk.FixedHeader.Qos > 0 {
		ir.durable = time.Now() // for ackWait; QoS 0 has no acknowledgement
	}
	a.mu.Lock()
	ir.err, ir.finished = err, true
	start := !a.draining && a.q[a.handed].finished
	if start {
		a.draining = true
	}
	a.mu.Unlock()
	if start {
		a.h.runDrain(a)
	}
}

// runDrain has a's finished appends acknowledged. The acker's fanner does
// it (drainFast) when it can write the PUBACKs without waiting; otherwise
// runWorker does.
//
// Why the fanner: when each acker's drain ran on a worker of its own, every
// group commit woke one worker per client it covered, and the PUBACK waited
// for that worker to be scheduled (at 29,000 msg/s from 64 clients on 2
// cores, 1 ms at the median and 6-23 ms at p99). The fanner is woken once per
// group commit and writes the PUBACKs of all the clients in turn.
func (h *ingestHook) runDrain(a *acker) {
	f := a.f
	f.mu.Lock()
	f.ready = append(f.ready, a)
	f.mu.Unlock()
	f.readyFlag.Store(true)
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

// runWorker runs a.drain on an idle worker, or on a new goroutine when all
// are busy (one slow client must not hold up the others). Workers keep
// their grown stacks: a new goroutine per drain spent a measurable share of
// the broker's CPU growing its stack to the depth of mochi's fan-out.
func (h *ingestHook) runWorker(a *acker) {
	select {
	case h.idle <- a:
	default:
		go a.drain()
	}
}

// newFanners gives h one fanner per four cores; startWorkers starts them.
func (h *ingestHook) newFanners() {
	h.fanners = make([]*fanner, (runtime.GOMAXPROCS(0)+3)/4)
	for i := range h.fanners {
		h.fanners[i] = &fanner{h: h, signal: make(chan struct{}, 1)}
	}
}

// startWorkers starts n drain workers and the fanners; they stop when the
// broker's context is cancelled, after Close has waited for pending appends.
func (h *ingestHook) startWorkers(n int) {
	for _, f := range h.fanners {
		go f.run()
	}
	for range n {
		go func() {
			for {
				select {
				case a := <-h.idle:
					a.drain()
				case <-h.b.ctx.Done():
					return
				}
			}
		}()
	}
}

// drain acknowledges finished appends, oldest first, and stops at the first
// one still in flight (its promise starts the next drain). Each run of
// finished appends is acknowledged with the connection corked, so the run's
// PUBACKs leave in one write, and is then queued for fan-out: the publisher's
// next messages need only the PUBACKs.
func (a *acker) drain() {
	cc, _ := a.cl.Net.Conn.(*corkConn)
	for {
		a.mu.Lock()
		n, _ := a.finishedRunLocked()
		if n == 0 {
			a.mu.Unlock()
			return
		}
		items := make([]fanItem, n)
		for i, ir := range a.q[a.handed : a.handed+n] {
			items[i].ir = ir
		}
		a.handed += n
		a.mu.Unlock()

		if cc != nil {
			cc.cork()
		}
		for i := range items {
			items[i].ok = a.ack(items[i].ir)
		}
		if cc != nil {
			cc.uncork()
		}
		a.f.push(a, items)
	}
}

// fanItem is an acknowledged append waiting for its fan-out.
type fanItem struct {
	ir *ingressRecord
	ok bool // to be fanned out: neither failed nor QoS 2
}

type fanRun struct {
	a     *acker
	items []fanItem
}

// fanner hands acknowledged messages back to mochi, which retains them and
// delivers them to subscribers, one at a time, in the order their runs were
// queued, so each publisher's messages stay in order.
//
// Fan-out is serialised on purpose. When every publisher's drain fanned out
// its own run, they all wrote into the same subscribers' inflight stores and
// queues at once. With 64 publishers and one subscriber on "#", the drains
// queued on that subscriber's locks until Go's mutexes switched to handing
// the lock from one parked goroutine to the next, each hand-off waiting for
// the scheduler: the first second of a run stalled for up to half a second,
// and its PUBACK p99 was 170-230 ms instead of 25-30. A broker has one
// fanner per four cores; a publisher always uses the same one.
type fanner struct {
	h      *ingestHook
	mu     sync.Mutex
	q      []fanRun
	spare  []fanRun
	signal chan struct{} // capacity 1: work was queued

	ready      []*acker    // ackers with finished appends to acknowledge (under mu)
	readySpare []*acker    // ready's previous backing array
	readyFlag  atomic.Bool // ready may be non-empty: checked between fan-out runs

	wire [maxRun * 4]byte // drainFast's PUBACKs, on the fanner's goroutine only
}

func (f *fanner) push(a *acker, items []fanItem) {
	f.mu.Lock()
	f.q = append(f.q, fanRun{a: a, items: items})
	f.mu.Unlock()
	select {
	case f.signal <- struct{}{}:
	default:
	}
}

// run fans out until the broker's context is cancelled, which happens only
// after Close has waited for every pending append to be handed back.
func (f *fanner) run() {
	var q []fanRun
	for {
		f.ackReady()
		f.mu.Lock()
		q, f.q, f.spare = f.q, f.spare, nil
		f.mu.Unlock()
		if len(q) == 0 {
			select {
			case <-f.signal:
				continue
			case <-f.h.b.ctx.Done():
				return
			}
		}
		for i, r := range q {
			// Acknowledgements first: a publisher waits for its PUBACK,
			// a subscriber's delivery is already late by a flush.
			f.ackReady()
			f.fanOutRun(r)
			q[i] = fanRun{}
		}
		f.mu.Lock()
		if f.spare == nil {
			f.spare = q[:0]
		}
		f.mu.Unlock()
	}
}

// ackReady acknowledges the finished appends of the ready ackers.
func (f *fanner) ackReady() {
	if !f.readyFlag.Load() {
		return
	}
	f.mu.Lock()
	ready := f.ready
	f.ready, f.readySpare = f.readySpare, nil
	f.readyFlag.Store(false)
	f.mu.Unlock()
	for i, a := range ready {
		a.drainFast(&f.wire)
		ready[i] = nil
	}
	f.mu.Lock()
	if f.readySpare == nil {
		f.readySpare = ready[:0]
	}
	f.mu.Unlock()
}

// finishedRunLocked returns how many appends after the handed ones have
// finished, in order, up to maxRun, and whether all of them are successful
// QoS 0/1 appends (which drainFast can acknowledge). When none has, the
// drain ends here: the next append to finish starts another (queuedDone).
// The caller holds a.mu.
func (a *acker) finishedRunLocked() (n int, simple bool) {
	simple = true
	for _, ir := range a.q[a.handed:] {
		if !ir.finished || n == maxRun {
			break
		}
		if ir.err != nil || ir.turn != nil {
			simple = false
		}
		n++
	}
	if n == 0 {
		a.draining = false
	}
	return n, simple
}

// drainFast is drain for the fanner: it acknowledges runs of successful QoS
// 0/1 appends with writes that never wait. Anything else (a failed append,
// QoS 2, a connection that is not plain TCP, another goroutine writing to
// it) goes to runWorker, which takes over from the same point.
//
// wire is the fanner's buffer for the PUBACKs (on the stack it escaped to
// the heap: a kilobyte per call). tryWrite does not keep it.
func (a *acker) drainFast(wire *[maxRun * 4]byte) {
	cc, _ := a.cl.Net.Conn.(*corkConn)
	if cc == nil || cc.raw == nil {
		a.h.runWorker(a)
		return
	}
	for {
		a.mu.Lock()
		n, simple := a.finishedRunLocked()
		if n == 0 {
			a.mu.Unlock()
			return
		}
		if !simple {
			a.mu.Unlock()
			a.h.runWorker(a)
			return
		}
		items := make([]fanItem, n)
		b := wire[:0]
		for i, ir := range a.q[a.handed : a.handed+n] {
			items[i] = fanItem{ir: ir, ok: true}
			if ir.pk.FixedHeader.Qos == 1 {
				// PUBACK, success: the same four bytes in MQTT 3.1.1 and 5
				// (MQTT 5 leaves out reason code 0 without properties).
				b = append(b, packets.Puback<<4, 2, byte(ir.pk.PacketID>>8), byte(ir.pk.PacketID))
			}
		}
		a.mu.Unlock()
		// Counted before the write, as ack does, so that a client that
		// saw its PUBACK finds it counted.
		now := time.Now()
		for _, it := range items {
			a.h.countAcked(it.ir, now)
		}
		// A client that went away gets no PUBACK and resends after
		// reconnecting; the message is in the log, so it is fanned out
		// anyway (QoS 1 is at least once).
		if len(b) > 0 && !a.cl.Closed() {
			if !cc.tryWrite(b) {
				a.h.runWorker(a)
				return
			}
			info := a.h.b.srv.Info
			atomic.AddInt64(&info.BytesSent, int64(len(b)))
			atomic.AddInt64(&info.PacketsSent, int64(len(b)/4))
		}
		a.mu.Lock()
		a.handed += n
		a.mu.Unlock()
		a.f.push(a, items)
	}
}

func (f *fanner) fanOutRun(r fanRun) {
	a, h := r.a, f.h
	for _, it := range r.items {
		switch {
		case it.ir.turn != nil:
			// QoS 2: its read loop sends the PUBREC and fans it out, now
			// that everything before it is fanned out. It is always the
			// client's last message in flight: the read loop waits for it.
			close(it.ir.turn)
		case it.ok:
			a.fanOut(it.ir)
		}
	}
	a.mu.Lock()
	n := len(r.items)
	clear(a.q[:n])
	a.q = a.q[n:]
	a.handed -= n
	if len(a.q) == 0 {
		a.q = a.q[:0:0] // let the backing array go; a busy client soon grows a new one
	}
	a.mu.Unlock()
	// Recycled only now: a record still in the acker's queue must not be
	// reused (queuedDone looks at the queue's records).
	for _, it := range r.items {
		if it.ok && it.ir.err == nil {
			h.put(it.ir)
		}
		<-a.slots
		h.pending.Done()
	}
}

// maxRun bounds how many acknowledgements one corked write gathers, so the
// first of a long run does not wait for the last.
const maxRun = 256

// ack writes the PUBACK of a finished append (QoS 1), counts it, and
// reports whether the message is to be fanned out: not when the append
// failed (the client is refused and resends) nor for QoS 2, which the read
// loop takes over from here.
func (a *acker) ack(ir *ingressRecord) bool {
	h, cl, pk := a.h, a.cl, ir.pk
	if ir.err == nil && ir.turn == nil {
		if !ir.counted { // drainFast counted it before handing it over
			h.countAcked(ir, time.Now())
		}
	} else if pk.FixedHeader.Qos > 0 {
		h.b.metrics.appendWait.Observe(time.Since(ir.received).Seconds())
		if ir.err == nil {
			h.b.metrics.appended.Add(1)
		}
	}
	if ir.turn != nil {
		return false // QoS 2: the read loop takes it from here, in its turn
	}
	switch {
	case ir.err != nil && pk.FixedHeader.Qos > 0:
		h.fail(cl, pk, ir.err)
		return false // the failed record may still be referenced by the log
	case ir.err != nil:
		h.countDrop(ir.err)
	case pk.FixedHeader.Qos == 0:
	default:
		// A client that went away gets no PUBACK and resends after
		// reconnecting; the message is in the log, so it is fanned out
		// anyway (QoS 1 is at least once).
		err := cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
		if err != nil && !errors.Is(err, mqtt.ErrConnectionClosed) {
			h.b.logger.Debug("MQTT PUBACK not written", "client", cl.ID, "error", err)
		}
	}
	return true
}

// countAcked counts a successful QoS 0/1 append whose PUBACK (if any) is
// written at now.
func (h *ingestHook) countAcked(ir *ingressRecord, now time.Time) {
	ir.counted = true
	h.b.metrics.appended.Add(1)
	if ir.pk.FixedHeader.Qos > 0 {
		h.b.metrics.appendWait.Observe(now.Sub(ir.received).Seconds())
		h.b.metrics.ackWait.Observe(now.Sub(ir.durable).Seconds())
	}
}

// fanOut hands an acknowledged message back to mochi, which retains it and
// delivers it to subscribers.
func (a *acker) fanOut(ir *ingressRecord) {
	h, cl, pk := a.h, a.cl, ir.pk
	pk.Mods.MaxSize = reinjectMark
	if debugOrder {
		println("HB", pk.TopicName, string(pk.Payload))
	}
	pk.Connect.ClientIdentifier = cl.ID
	if err := h.b.srv.InjectPacket(h.fanout, pk); err != nil {
		h.b.logger.Debug("MQTT fan-out after append failed", "client", cl.ID, "error", err)
	}
}

// appendFailureCode picks the MQTT 5 reason code for a failed append.
func appendFailureCode(err error) packets.Code {
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, log.ErrRecordTooLarge):
		return packets.ErrQuotaExceeded
	case errors.Is(err, context.Canceled), errors.Is(err, log.ErrClosed):
		// 0x8B is not allowed in a PUBACK: unspecified, with the reason.
		return packets.Code{Code: packets.ErrUnspecifiedError.Code, Reason: "server shutting down"}
	}
	return packets.ErrUnspecifiedError
}

// OnWillSent appends a will message the broker published for a client that
// disconnected ungracefully (Sparkplug NDEATH is one). Nobody waits for an
// acknowledgement, so it is appended without waiting, as QoS 0 is.
func (h *ingestHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	id := pk.Origin
	if cl != nil {
		id = cl.ID
	}
	ir := h.get()
	ir.fill(h.topic, id, &pk, time.Now(), true)
	h.pending.Add(1)
	h.b.log.Produce(h.b.ctx, &ir.rec, ir.done)
}

func (h *ingestHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type == packets.Publish {
		if ls := h.b.metrics.byName[cl.Net.Listener]; ls != nil {
			ls.msgsOut.Add(1)
		}
	}
}

func (h *ingestHook) OnPublishDropped(*mqtt.Client, packets.Packet) {
	h.b.metrics.deliveryDropped.Add(1)
}

const debugOrder = false
