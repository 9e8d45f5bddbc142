package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"

	"github.com/millstream/millstream/log"
)

// stateHook is mochi's persistent storage, kept in a log topic of one
// partition with unlimited retention: key = entity, value = its encoded state
// or empty for a delete (see statecodec.go). On start the topic is replayed
// into memory and handed to mochi through the Stored* methods.
//
// Writes use Produce without waiting: fan-out to subscribers must not wait
// for an fsync of bookkeeping, and what a crash can lose this way is only the
// latest changes of sessions (a queued message a subscriber had not yet been
// sent, or a subscription made just before the crash). Inbound message state
// is not stored at all: an inbound QoS 1/2 message is acknowledged only after
// its durable append to the ingress topic, which is what matters.
//
// All writes happen under mu, so their order in the topic is the order of the
// changes, and the in-memory copy (used for snapshots and metrics) is
// consistent with the topic.
type stateHook struct {
	mqtt.HookBase
	b     *Broker
	topic string

	mu       sync.Mutex
	sessions map[string]*sessionState
	retained map[string][]byte
	live     int   // keys in sessions and retained
	total    int64 // records in the topic, from its start
	minSnap  int64

	loading atomic.Bool // mochi is restoring the stored state
	pending sync.WaitGroup
	broken  atomic.Bool // a write failed: the next snapshot repairs the topic
	kick    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	running atomic.Bool // compactLoop was started
	nSess   atomic.Int64
	nRet    atomic.Int64
}

type sessionState struct {
	client   []byte            // encoded storage.Client, nil if only subs/inflights are known
	subs     map[string][]byte // filter -> encoded storage.Subscription
	inflight map[uint16][]byte // packet id -> encoded storage.Message
}

func newStateHook(b *Broker, topic string, minSnap int64) *stateHook {
	return &stateHook{
		b:        b,
		topic:    topic,
		sessions: map[string]*sessionState{},
		retained: map[string][]byte{},
		minSnap:  minSnap,
		kick:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
}

func (h *stateHook) ID() string { return "millstream-state" }

func (h *stateHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnQosDropped,
		mqtt.OnClientExpired, mqtt.OnRetainedExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages,
		mqtt.StoredRetainedMessages, mqtt.StoredSysInfo:
		return true
	}
	return false
}

// ephemeral reports whether a client's session ends with its connection; such
// sessions are never written, which keeps clean-session subscribers' QoS 1
// traffic out of the state topic.
func ephemeral(cl *mqtt.Client) bool {
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval == 0
	}
	return cl.Properties.Clean
}

// load creates the state topic if needed and replays it.
func (h *stateHook) load(ctx context.Context) error {
	err := h.b.log.CreateTopic(ctx, h.topic, log.TopicConfig{Partitions: 1, RetentionAge: -1, RetentionBytes: -1})
	if err != nil && !errors.Is(err, log.ErrTopicExists) {
		return fmt.Errorf("create MQTT state topic %s: %w", h.topic, err)
	}
	info, err := h.b.log.Topic(ctx, h.topic)
	if err != nil {
		return fmt.Errorf("MQTT state topic %s: %w", h.topic, err)
	}
	if len(info.Partitions) != 1 {
		return fmt.Errorf("MQTT state topic %s has %d partitions; it must have exactly 1 (it is replayed in order); delete the topic to start with empty sessions", h.topic, len(info.Partitions))
	}
	p := info.Partitions[0]
	bad := 0
	for off := p.Start; off < p.End; {
		recs, err := h.b.log.Fetch(ctx, h.topic, 0, off, log.FetchOptions{MaxBytes: 4 << 20})
		if err != nil {
			return fmt.Errorf("replay MQTT state topic %s at offset %d: %w", h.topic, off, err)
		}
		if len(recs) == 0 {
			break
		}
		for i := range recs {
			if err := h.apply(&recs[i]); err != nil {
				bad++
				h.b.logger.Warn("skipping unreadable MQTT state record", "topic", h.topic, "offset", recs[i].Offset, "error", err)
			}
			off = recs[i].Offset + 1
		}
	}
	h.total = p.End - p.Start
	// Subscriptions or messages of a session whose client record is gone
	// would be resurrected if that client id connected again: delete them.
	h.mu.Lock()
	for id, s := range h.sessions {
		if s.client == nil {
			h.deleteSessionLocked(id)
		}
	}
	h.mu.Unlock()
	h.b.logger.Info("MQTT session state restored", "topic", h.topic, "records", p.End-p.Start,
		"sessions", len(h.sessions), "retained", len(h.retained), "unreadable", bad)
	if bad > 0 {
		h.broken.Store(true) // rewrite without them
	}
	h.maybeKickLocked()
	return nil
}

// apply replays one record into memory (no writes).
func (h *stateHook) apply(r *log.Record) error {
	k, err := decodeStateKey(r.Key)
	if err != nil {
		return err
	}
	if k.kind == kindMarker {
		return nil
	}
	del := len(r.Value) == 0
	if !del {
		if _, err := decodeStateValue(k, r.Value); err != nil {
			return err
		}
	}
	v := bytes.Clone(r.Value)
	switch k.kind {
	case kindRetained:
		h.setRetainedLocked(k.name, v, del)
	default:
		h.setSessionLocked(k, v, del)
	}
	return nil
}

func (h *stateHook) session(id string, create bool) *sessionState {
	s := h.sessions[id]
	if s == nil && create {
		s = &sessionState{subs: map[string][]byte{}, inflight: map[uint16][]byte{}}
		h.sessions[id] = s
	}
	return s
}

// setSessionLocked updates memory only; it reports whether anything changed.
func (h *stateHook) setSessionLocked(k stateKey, v []byte, del bool) bool {
	s := h.session(k.client, !del)
	if s == nil {
		return false
	}
	changed := true
	switch k.kind {
	case kindClient:
		if del {
			changed = s.client != nil
			if changed {
				h.live--
			}
			s.client = nil
		} else {
			if s.client == nil {
				h.live++
			}
			s.client = v
		}
	case kindSub:
		_, had := s.subs[k.name]
		if del {
			changed = had
			delete(s.subs, k.name)
		} else {
			s.subs[k.name] = v
		}
		h.live += liveDelta(had, del)
	case kindInflight:
		_, had := s.inflight[k.packetID]
		if del {
			changed = had
			delete(s.inflight, k.packetID)
		} else {
			s.inflight[k.packetID] = v
		}
		h.live += liveDelta(had, del)
	}
	if s.client == nil && len(s.subs) == 0 && len(s.inflight) == 0 {
		delete(h.sessions, k.client)
	}
	h.nSess.Store(int64(len(h.sessions)))
	return changed
}

// liveDelta is the change in live keys when a key that existed (had) is set
// or deleted.
func liveDelta(had, del bool) int {
	switch {
	case had && del:
		return -1
	case !had && !del:
		return 1
	}
	return 0
}

func (h *stateHook) setRetainedLocked(topic string, v []byte, del bool) bool {
	_, had := h.retained[topic]
	if del {
		if !had {
			return false
		}
		delete(h.retained, topic)
		h.live--
	} else {
		if !had {
			h.live++
		}
		h.retained[topic] = v
	}
	h.nRet.Store(int64(len(h.retained)))
	return true
}

// put records a change in memory and appends it to the topic; v == nil
// deletes. Callers hold mu.
func (h *stateHook) putLocked(k stateKey, v []byte) {
	var changed bool
	if k.kind == kindRetained {
		changed = h.setRetainedLocked(k.name, v, v == nil)
	} else {
		changed = h.setSessionLocked(k, v, v == nil)
	}
	if !changed {
		return // deleting what is not there
	}
	h.writeLocked(k.encode(), v)
	h.maybeKickLocked()
}

func (h *stateHook) writeLocked(key, value []byte) {
	h.total++
	h.pending.Add(1)
	h.b.log.Produce(h.b.ctx, &log.Record{Topic: h.topic, Partition: 0, PartitionSet: true, Key: key, Value: value}, h.written)
}

// written is the promise of every state write. It runs on the log's
// goroutine: atomics only, no locks.
func (h *stateHook) written(_ *log.Record, err error) {
	defer h.pending.Done()
	if err != nil {
		h.b.metrics.stateErrors.Add(1)
		if h.broken.CompareAndSwap(false, true) {
			h.b.logger.Error("MQTT session state write failed; a snapshot will rewrite the state topic", "topic", h.topic, "error", err)
		}
		select {
		case h.kick <- struct{}{}:
		default:
		}
		return
	}
	h.b.metrics.stateWrites.Add(1)
}

// maybeKickLocked wakes the compactor when the topic has grown well beyond
// the live state (at least minSnap records of garbage and 4x the live keys).
func (h *stateHook) maybeKickLocked() {
	live := int64(h.live)
	if h.total > 4*live && h.total-live > h.minSnap {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

func (h *stateHook) deleteSessionLocked(id string) {
	s := h.sessions[id]
	if s == nil {
		return
	}
	for f := range s.subs {
		h.putLocked(stateKey{kind: kindSub, client: id, name: f}, nil)
	}
	for p := range s.inflight {
		h.putLocked(stateKey{kind: kindInflight, client: id, packetID: p}, nil)
	}
	h.putLocked(stateKey{kind: kindClient, client: id}, nil)
}

// startCompactor runs compactLoop in the background.
func (h *stateHook) startCompactor() {
	h.running.Store(true)
	go h.compactLoop()
}

// compactLoop writes snapshots when kicked, until stop.
func (h *stateHook) compactLoop() {
	defer close(h.stopped)
	for {
		select {
		case <-h.stop:
			return
		case <-h.kick:
			h.compact()
		}
	}
}

// compact writes a snapshot: a marker, then every live entry again, and once
// all of it is durable deletes everything before the marker. Any key whose
// last record lies before the marker is either live (and so rewritten after
// it) or deleted (and so correctly gone), so replaying from the marker gives
// the same state. Writes made concurrently by hooks follow the snapshot in
// the topic because everything is written under mu.
func (h *stateHook) compact() {
	h.mu.Lock()
	live := int64(h.live)
	if !h.broken.Load() && !(h.total > 4*live && h.total-live > h.minSnap) {
		h.mu.Unlock()
		return
	}
	h.broken.Store(false)
	before := h.total
	var wg sync.WaitGroup
	var failed atomic.Bool
	var marker atomic.Int64
	marker.Store(-1)
	produce := func(key, value []byte, isMarker bool) {
		wg.Add(1)
		h.b.log.Produce(h.b.ctx, &log.Record{Topic: h.topic, PartitionSet: true, Key: key, Value: value},
			func(r *log.Record, err error) {
				if err != nil {
					failed.Store(true)
				} else if isMarker {
					marker.Store(r.Offset)
				}
				wg.Done()
			})
	}
	produce(stateKey{kind: kindMarker}.encode(), nil, true)
	for id, s := range h.sessions {
		if s.client != nil {
			produce(stateKey{kind: kindClient, client: id}.encode(), s.client, false)
		}
		for f, v := range s.subs {
			produce(stateKey{kind: kindSub, client: id, name: f}.encode(), v, false)
		}
		for p, v := range s.inflight {
			produce(stateKey{kind: kindInflight, client: id, packetID: p}.encode(), v, false)
		}
	}
	for t, v := range h.retained {
		produce(stateKey{kind: kindRetained, name: t}.encode(), v, false)
	}
	h.total = 1 + live
	h.mu.Unlock()

	wg.Wait()
	off := marker.Load()
	if failed.Load() || off < 0 {
		h.broken.Store(true)
		h.b.logger.Error("MQTT session state snapshot failed; the topic keeps its older records and is retried later", "topic", h.topic)
		return
	}
	if err := h.b.log.DeleteRecordsBefore(h.b.ctx, h.topic, 0, off); err != nil {
		h.b.logger.Error("MQTT session state compaction: deleting records before the snapshot failed; they are replayed harmlessly", "topic", h.topic, "offset", off, "error", err)
		return
	}
	h.b.metrics.compactions.Add(1)
	h.b.logger.Info("MQTT session state compacted", "topic", h.topic, "records_before", before, "live", live, "snapshot_offset", off)
}

// close stops the compactor and waits until the writes in progress are
// done or ctx ends.
func (h *stateHook) close(ctx context.Context) error {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	done := make(chan struct{})
	go func() {
		if h.running.Load() {
			<-h.stopped
		}
		h.pending.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("MQTT session state writes still pending at shutdown: %w", ctx.Err())
	}
}

func encodeClient(cl *mqtt.Client) []byte {
	props := cl.Properties.Props
	v, err := encodeStateValue(storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
	if err != nil {
		panic("encode MQTT client state: " + err.Error()) // plain data: cannot fail
	}
	return v
}

func encodeMessage(t, clientID string, pk packets.Packet) []byte {
	v, err := encodeStateValue(storage.Message{
		T:           t,
		Client:      clientID,
		Origin:      pk.Origin,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Created:     pk.Created,
		PacketID:    pk.PacketID,
		Properties: storage.MessageProperties{
			PayloadFormat:          pk.Properties.PayloadFormat,
			PayloadFormatFlag:      pk.Properties.PayloadFormatFlag,
			MessageExpiryInterval:  pk.Properties.MessageExpiryInterval,
			ContentType:            pk.Properties.ContentType,
			ResponseTopic:          pk.Properties.ResponseTopic,
			CorrelationData:        pk.Properties.CorrelationData,
			SubscriptionIdentifier: pk.Properties.SubscriptionIdentifier,
			User:                   pk.Properties.User,
		},
	})
	if err != nil {
		panic("encode MQTT message state: " + err.Error()) // plain data: cannot fail
	}
	return v
}

func (h *stateHook) putClient(cl *mqtt.Client) {
	v := encodeClient(cl) // outside the lock
	h.mu.Lock()
	h.putLocked(stateKey{kind: kindClient, client: cl.ID}, v)
	h.mu.Unlock()
}

func (h *stateHook) deleteSession(id string) {
	h.mu.Lock()
	h.deleteSessionLocked(id)
	h.mu.Unlock()
}

// OnSessionEstablished stores a persistent session, and forgets a stored one
// when the client id now connects with a clean start.
func (h *stateHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if ephemeral(cl) {
		h.deleteSession(cl.ID)
		return
	}
	h.putClient(cl)
}

// OnDisconnect stores the session as it is at disconnect (a v5 DISCONNECT
// may change its expiry), or deletes it when it ends here.
func (h *stateHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if errors.Is(cl.StopCause(), packets.ErrSessionTakenOver) {
		return // the new connection owns the session now
	}
	if expire {
		h.deleteSession(cl.ID)
		return
	}
	if h.loading.Load() {
		return // mochi restoring a session we just read
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.sessions[cl.ID]; s != nil && s.client != nil {
		h.putLocked(stateKey{kind: kindClient, client: cl.ID}, encodeClient(cl))
	}
}

func (h *stateHook) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	if cl == nil || ephemeral(cl) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.sessions[cl.ID]; s != nil && s.client != nil {
		h.putLocked(stateKey{kind: kindClient, client: cl.ID}, encodeClient(cl))
	}
}

func (h *stateHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	if ephemeral(cl) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, f := range pk.Filters {
		if i >= len(reasonCodes) || reasonCodes[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		v, err := encodeStateValue(storage.Subscription{
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            f.Filter,
			Qos:               reasonCodes[i],
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		})
		if err != nil {
			continue
		}
		h.putLocked(stateKey{kind: kindSub, client: cl.ID, name: f.Filter}, v)
	}
}

func (h *stateHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if ephemeral(cl) {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, f := range pk.Filters {
		h.putLocked(stateKey{kind: kindSub, client: cl.ID, name: f.Filter}, nil)
	}
}

func (h *stateHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	k := stateKey{kind: kindRetained, name: pk.TopicName}
	var v []byte
	if r != -1 && len(pk.Payload) > 0 {
		id := ""
		if cl != nil {
			id = cl.ID
		}
		v = encodeMessage(storage.RetainedKey, id, pk)
	}
	h.mu.Lock()
	h.putLocked(k, v)
	h.mu.Unlock()
}

func (h *stateHook) OnRetainedExpired(topic string) {
	h.mu.Lock()
	h.putLocked(stateKey{kind: kindRetained, name: topic}, nil)
	h.mu.Unlock()
}

// OnQosPublish stores an outbound QoS 1/2 message for a persistent session
// (sent and unacknowledged, or queued while the client is offline). Inbound
// acknowledgement state (PUBACK/PUBREC packets mochi also passes here) is not
// stored: the message itself is already durable in the ingress topic.
func (h *stateHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if pk.FixedHeader.Type != packets.Publish || ephemeral(cl) {
		return
	}
	k := stateKey{kind: kindInflight, client: cl.ID, packetID: pk.PacketID}
	h.mu.Lock()
	if s := h.sessions[cl.ID]; s != nil {
		if _, ok := s.inflight[pk.PacketID]; ok {
			h.mu.Unlock()
			return // a resend of what is stored: packet ids are not reused before completion
		}
	}
	h.mu.Unlock()
	v := encodeMessage(storage.InflightKey, cl.ID, pk)
	h.mu.Lock()
	h.putLocked(k, v)
	h.mu.Unlock()
}

func (h *stateHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if ephemeral(cl) {
		return
	}
	h.mu.Lock()
	h.putLocked(stateKey{kind: kindInflight, client: cl.ID, packetID: pk.PacketID}, nil)
	h.mu.Unlock()
}

func (h *stateHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() {
		return // the messages moved to the new connection of this session
	}
	h.OnQosComplete(cl, pk)
}

func (h *stateHook) OnClientExpired(cl *mqtt.Client) {
	h.deleteSession(cl.ID)
}

// The Stored* methods hand the replayed state to mochi at Serve. Values were
// validated when replayed.

func (h *stateHook) StoredClients() ([]storage.Client, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]storage.Client, 0, len(h.sessions))
	for id, s := range h.sessions {
		if v, err := decodeStateValue(stateKey{kind: kindClient, client: id}, s.client); err == nil {
			out = append(out, *v.(*storage.Client))
		}
	}
	return out, nil
}

func (h *stateHook) StoredSubscriptions() ([]storage.Subscription, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []storage.Subscription
	for id, s := range h.sessions {
		for f, b := range s.subs {
			if v, err := decodeStateValue(stateKey{kind: kindSub, client: id, name: f}, b); err == nil {
				out = append(out, *v.(*storage.Subscription))
			}
		}
	}
	return out, nil
}

func (h *stateHook) StoredInflightMessages() ([]storage.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []storage.Message
	for id, s := range h.sessions {
		for p, b := range s.inflight {
			if v, err := decodeStateValue(stateKey{kind: kindInflight, client: id, packetID: p}, b); err == nil {
				out = append(out, *v.(*storage.Message))
			}
		}
	}
	return out, nil
}

func (h *stateHook) StoredRetainedMessages() ([]storage.Message, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]storage.Message, 0, len(h.retained))
	for t, b := range h.retained {
		if v, err := decodeStateValue(stateKey{kind: kindRetained, name: t}, b); err == nil {
			out = append(out, *v.(*storage.Message))
		}
	}
	return out, nil
}

// StoredSysInfo gives mochi the counts its loaders do not maintain, so the
// $SYS topics and the inflight metric are right after a restart.
func (h *stateHook) StoredSysInfo() (storage.SystemInfo, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var subs, inflight int64
	for _, s := range h.sessions {
		subs += int64(len(s.subs))
		inflight += int64(len(s.inflight))
	}
	return storage.SystemInfo{Info: system.Info{
		Retained:      int64(len(h.retained)),
		Subscriptions: subs,
		Inflight:      inflight,
		Started:       time.Now().Unix(),
	}}, nil
}
