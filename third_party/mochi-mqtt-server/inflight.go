// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"container/heap"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
type Inflight struct {
	sync.RWMutex
	internal map[uint16]*packets.Packet // internal contains the inflight packets (Millstream patch: pooled pointers, see packetPool)
	order    map[uint16]uint64          // insertion sequence of each packet id (Millstream patch)
	next     uint64                     // next insertion sequence
	parked   int                        // packets waiting for send quota (Expiry < 0) (Millstream patch)
	// parkedQ holds the parked packets' ids by insertion sequence, oldest
	// first, so the next one to send is found without sorting every
	// inflight packet (Millstream patch). Entries are checked when taken:
	// one whose packet was sent, deleted or replaced is skipped.
	parkedQ parkedHeap
	// sendMu serialises queueing quota-limited packets for sending, so that
	// a packet taken from the parked ones and a new one cannot overtake
	// each other on the way to the outbound queue (Millstream patch).
	sendMu              sync.Mutex
	receiveQuota        int32 // remaining inbound qos quota for flow control
	sendQuota           int32 // remaining outbound qos quota for flow control
	maximumReceiveQuota int32 // maximum allowed receive quota
	maximumSendQuota    int32 // maximum allowed send quota
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal: map[uint16]*packets.Packet{},
		order:    map[uint16]uint64{},
	}
}

// Set adds or updates an inflight packet by packet id.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()

	return i.set(m)
}

// set is Set with the lock held.
func (i *Inflight) set(m packets.Packet) bool {
	old, ok := i.internal[m.PacketID]
	wasParked := ok && old.Expiry < 0 // read before *old is overwritten below
	if wasParked {
		i.parked--
	}
	if m.Expiry < 0 {
		i.parked++
	}
	// Millstream patch: the map held 800-byte packets by value, which Go's
	// map stores out of line, an allocation per message; it holds pooled
	// pointers now (packetPool). None leaves the store: every accessor
	// returns a copy.
	if ok {
		*old = m
	} else {
		i.internal[m.PacketID] = getPacket(m)
		i.order[m.PacketID] = i.next
		i.next++
	}
	if m.Expiry < 0 && !wasParked {
		heap.Push(&i.parkedQ, parkedEntry{seq: i.order[m.PacketID], id: m.PacketID})
	}
	return !ok
}

type parkedEntry struct {
	seq uint64
	id  uint16
}

// parkedHeap is a min-heap of parked packets by insertion sequence
// (container/heap).
type parkedHeap []parkedEntry

func (h parkedHeap) Len() int           { return len(h) }
func (h parkedHeap) Less(a, b int) bool { return h[a].seq < h[b].seq }
func (h parkedHeap) Swap(a, b int)      { h[a], h[b] = h[b], h[a] }
func (h *parkedHeap) Push(x any)        { *h = append(*h, x.(parkedEntry)) }
func (h *parkedHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// oldestParked returns the parked packet inserted first, dropping stale
// entries on the way. The caller holds the write lock.
func (i *Inflight) oldestParked() (packets.Packet, bool) {
	for i.parkedQ.Len() > 0 {
		e := i.parkedQ[0]
		m, ok := i.internal[e.id]
		if ok && m.Expiry < 0 && i.order[e.id] == e.seq {
			return *m, true
		}
		heap.Pop(&i.parkedQ)
	}
	if cap(i.parkedQ) > 1024 {
		i.parkedQ = nil // let a burst's array go
	}
	return packets.Packet{}, false
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return *m, true
	}

	return packets.Packet{}, false
}

// Len returns the size of the inflight messages map.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
func (i *Inflight) Clone() *Inflight {
	c := NewInflights()
	i.RLock()
	defer i.RUnlock()
	for k, v := range i.internal {
		c.internal[k] = getPacket(*v)
		c.order[k] = i.order[k]
	}
	c.next, c.parked = i.next, i.parked
	for k, v := range c.internal {
		if v.Expiry < 0 {
			c.parkedQ = append(c.parkedQ, parkedEntry{seq: c.order[k], id: k})
		}
	}
	heap.Init(&c.parkedQ)
	return c
}

// GetAll returns all the inflight messages, in the order they were added.
//
// Millstream patch: upstream sorted by uint16(Created), the creation second,
// which reorders messages added within the same second (and wraps); the
// insertion sequence keeps them in the order they were queued, as MQTT
// requires for messages of one topic [MQTT-4.6.0-6].
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()
	return i.getAll(immediate)
}

// getAll is GetAll with the read lock held.
func (i *Inflight) getAll(immediate bool) []packets.Packet {
	m := []packets.Packet{}
	for _, v := range i.internal {
		if !immediate || (immediate && v.Expiry < 0) {
			m = append(m, *v)
		}
	}

	sort.Slice(m, func(a, b int) bool {
		return i.order[m[a].PacketID] < i.order[m[b].PacketID]
	})

	return m
}

// NextImmediate returns the next inflight packet which is indicated to be sent immediately.
// This typically occurs when the quota has been exhausted, and we need to wait until new quota
// is free to continue sending.
//
// Millstream patch: upstream took the read lock here and again in GetAll; a
// writer (Set from a concurrent fan-out) waiting between the two blocks the
// second RLock, and the client deadlocks.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	m := i.getAll(true)
	if len(m) > 0 {
		return m[0], true
	}

	return packets.Packet{}, false
}

// SetForSend stores a new outbound quota-limited packet and decides whether
// it may be sent now: it is parked (Expiry -1) when the send quota is used
// up or when older packets are parked already, so that it cannot overtake
// them. Otherwise it takes one unit of send quota. The caller holds sendMu
// and queues the packet when it is not parked (Millstream patch: upstream
// parked only on an exhausted quota, so new packets overtook parked ones).
func (i *Inflight) SetForSend(m packets.Packet) (isNew, parked bool) {
	i.Lock()
	defer i.Unlock()
	parked = atomic.LoadInt32(&i.maximumSendQuota) > 0 && (atomic.LoadInt32(&i.sendQuota) <= 0 || i.parked > 0)
	if parked {
		m.Expiry = -1
	}
	isNew = i.set(m)
	if !parked {
		i.DecreaseSendQuota()
	}
	return isNew, parked
}

// TakeImmediate returns the oldest parked packet if there is send quota for
// it, marks it sent (it stays inflight until acknowledged) and takes one
// unit of quota. The caller holds sendMu and queues the packet (Millstream
// patch: upstream deleted the packet once written, so its acknowledgement
// never gave the quota back and the client stalled).
func (i *Inflight) TakeImmediate() (packets.Packet, bool) {
	i.Lock()
	defer i.Unlock()
	if i.parked == 0 || atomic.LoadInt32(&i.sendQuota) <= 0 {
		return packets.Packet{}, false
	}
	next, ok := i.oldestParked()
	if !ok {
		return packets.Packet{}, false
	}
	heap.Pop(&i.parkedQ)
	next.Expiry = 0
	i.set(next)
	i.DecreaseSendQuota()
	return next, true
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
func (i *Inflight) Delete(id uint16) bool {
	i.Lock()
	defer i.Unlock()

	old, ok := i.internal[id]
	if ok && old.Expiry < 0 {
		i.parked--
	}
	if ok {
		putPacket(old)
	}
	delete(i.internal, id)
	delete(i.order, id)

	return ok
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1.
func (i *Inflight) DecreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1.
func (i *Inflight) IncreaseSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// ResetSendQuota resets the send quota to the maximum allowed value.
func (i *Inflight) ResetSendQuota(n int32) {
	atomic.StoreInt32(&i.sendQuota, n)
	atomic.StoreInt32(&i.maximumSendQuota, n)
}
