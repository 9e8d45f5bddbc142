package kafkaproto

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The group coordinator implements Kafka's classic consumer group protocol
// (JoinGroup/SyncGroup/Heartbeat/LeaveGroup). The server never looks inside
// the protocol metadata or assignments: the leader member computes the
// assignment with whatever assignor the members agreed on (range,
// roundrobin, cooperative-sticky, ...) and the coordinator relays it.
// Cooperative rebalancing needs nothing extra from the coordinator: the
// members revoke and rejoin on their own.
//
// Group membership lives in memory; a restart makes members rejoin.
// Committed offsets live in the log (see handleOffsetCommit).

type groupState int

const (
	stateEmpty groupState = iota
	statePreparingRebalance
	stateCompletingRebalance
	stateStable
)

func (s groupState) String() string {
	switch s {
	case statePreparingRebalance:
		return "PreparingRebalance"
	case stateCompletingRebalance:
		return "CompletingRebalance"
	case stateStable:
		return "Stable"
	}
	return "Empty"
}

const (
	minSessionTimeout = time.Second
	maxSessionTimeout = 30 * time.Minute // Kafka's group.max.session.timeout.ms
	maxGroupMembers   = 1000
)

type coordinator struct {
	s      *Server
	mu     sync.Mutex
	groups map[string]*group
	closed bool
}

type group struct {
	name         string
	state        groupState
	generation   int32
	protocolType string
	protocol     string
	leader       string
	members      map[string]*member
	joinSeq      int
	// rebalanceTimer ends PreparingRebalance when not every member has
	// rejoined in time; rebalanceEpoch tells a stale timer from the current.
	rebalanceTimer *time.Timer
	rebalanceEpoch int
	delaying       bool // initial rebalance delay of an empty group running
	// pending are member ids handed out with MEMBER_ID_REQUIRED and not
	// yet used, with when they expire.
	pending map[string]time.Time
}

type member struct {
	id               string
	instanceID       *string
	clientID         string
	clientHost       string
	protocolType     string
	protocols        []kmsg.JoinGroupRequestProtocol
	sessionTimeout   time.Duration
	rebalanceTimeout time.Duration
	joinSeq          int
	assignment       []byte

	joinCh chan *kmsg.JoinGroupResponse // set while waiting in JoinGroup
	joinV  int16
	syncCh chan *kmsg.SyncGroupResponse // set while waiting in SyncGroup
	syncV  int16

	deadline time.Time
	timer    *time.Timer
}

func newCoordinator(s *Server) *coordinator {
	return &coordinator{s: s, groups: map[string]*group{}}
}

func (co *coordinator) close() {
	co.mu.Lock()
	defer co.mu.Unlock()
	co.closed = true
	for _, g := range co.groups {
		if g.rebalanceTimer != nil {
			g.rebalanceTimer.Stop()
		}
		for _, m := range g.members {
			if m.timer != nil {
				m.timer.Stop()
			}
		}
	}
}

func newMemberID(clientID string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if clientID == "" {
		clientID = "member"
	}
	return clientID + "-" + hex.EncodeToString(b[:])
}

func joinError(v int16, memberID string, code int16) *kmsg.JoinGroupResponse {
	r := kmsg.NewPtrJoinGroupResponse()
	r.Version = v
	r.ErrorCode, r.MemberID, r.Generation = code, memberID, -1
	return r
}

func syncError(v int16, code int16) *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupResponse()
	r.Version = v
	r.ErrorCode = code
	return r
}

func (co *coordinator) join(ctx context.Context, c *conn, req *kmsg.JoinGroupRequest) kmsg.Response {
	v := req.Version
	session := time.Duration(req.SessionTimeoutMillis) * time.Millisecond
	rebalance := session
	if v >= 1 {
		rebalance = time.Duration(req.RebalanceTimeoutMillis) * time.Millisecond
	}
	switch {
	case req.Group == "":
		return joinError(v, req.MemberID, codeInvalidGroupID)
	case session < minSessionTimeout || session > maxSessionTimeout:
		return joinError(v, req.MemberID, codeInvalidSessionTimeout)
	case req.ProtocolType == "" || len(req.Protocols) == 0:
		return joinError(v, req.MemberID, codeInconsistentProtocol)
	}
	rebalance = min(max(rebalance, session), maxSessionTimeout)

	co.mu.Lock()
	if co.closed {
		co.mu.Unlock()
		return joinError(v, req.MemberID, kerr.NotCoordinator.Code)
	}
	g := co.groups[req.Group]
	if g == nil {
		g = &group{name: req.Group, members: map[string]*member{}, pending: map[string]time.Time{}}
		co.groups[req.Group] = g
	}
	if len(g.members) > 0 && (req.ProtocolType != g.protocolType || !compatible(g, req.MemberID, req.Protocols)) {
		co.mu.Unlock()
		return joinError(v, req.MemberID, codeInconsistentProtocol)
	}
	m := g.members[req.MemberID]
	if req.MemberID == "" {
		id := newMemberID(c.clientID)
		if v >= 4 {
			// KIP-394: hand out the id first, so a client that retries
			// a timed-out join does not leave ghost members behind.
			now := time.Now()
			for pid, exp := range g.pending {
				if now.After(exp) {
					delete(g.pending, pid)
				}
			}
			if len(g.pending) >= maxGroupMembers {
				co.mu.Unlock()
				return joinError(v, "", kerr.GroupMaxSizeReached.Code)
			}
			g.pending[id] = now.Add(rebalance)
			co.mu.Unlock()
			return joinError(v, id, codeMemberIDRequired)
		}
		req.MemberID = id
	} else if m == nil {
		if _, ok := g.pending[req.MemberID]; !ok {
			co.mu.Unlock()
			return joinError(v, req.MemberID, codeUnknownMember)
		}
		delete(g.pending, req.MemberID)
	}
	if m == nil && len(g.members) >= maxGroupMembers {
		co.mu.Unlock()
		return joinError(v, req.MemberID, kerr.GroupMaxSizeReached.Code)
	}
	if m != nil && m.joinCh == nil && sameProtocols(m, req) &&
		(g.state == stateCompletingRebalance || g.state == stateStable && m.id != g.leader) {
		// A rejoin that changes nothing: answer with the current
		// generation instead of rebalancing everyone.
		resp := g.joinResponse(m, v)
		co.touch(g, m)
		co.mu.Unlock()
		return resp
	}
	if m == nil {
		g.joinSeq++
		m = &member{id: req.MemberID, joinSeq: g.joinSeq}
		g.members[m.id] = m
	}
	if m.joinCh != nil {
		// The client gave up on an earlier join and retried.
		m.joinCh <- joinError(m.joinV, m.id, codeRebalanceInProgress)
	}
	m.instanceID, m.clientID, m.clientHost = req.InstanceID, c.clientID, hostOf(c.remote)
	m.protocolType, m.protocols = req.ProtocolType, slices.Clone(req.Protocols)
	m.sessionTimeout, m.rebalanceTimeout = session, rebalance
	ch := make(chan *kmsg.JoinGroupResponse, 1)
	m.joinCh, m.joinV = ch, v
	if len(g.members) == 1 {
		g.protocolType = req.ProtocolType
	}
	co.prepareRebalance(g)
	co.maybeCompleteJoin(g)
	co.mu.Unlock()

	select {
	case resp := <-ch:
		return resp
	case <-ctx.Done():
		return joinError(v, req.MemberID, kerr.NotCoordinator.Code)
	}
}

func hostOf(addr string) string {
	if i := lastIndexByte(addr, ':'); i > 0 {
		return "/" + addr[:i]
	}
	return "/" + addr
}

func lastIndexByte(s string, b byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == b {
			return i
		}
	}
	return -1
}

// compatible reports whether protocols share a protocol with every member
// other than memberID.
func compatible(g *group, memberID string, protocols []kmsg.JoinGroupRequestProtocol) bool {
	for _, p := range protocols {
		ok := true
		for id, m := range g.members {
			if id == memberID {
				continue
			}
			if !slices.ContainsFunc(m.protocols, func(q kmsg.JoinGroupRequestProtocol) bool { return q.Name == p.Name }) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func sameProtocols(m *member, req *kmsg.JoinGroupRequest) bool {
	if m.protocolType != req.ProtocolType || len(m.protocols) != len(req.Protocols) {
		return false
	}
	for i, p := range req.Protocols {
		if m.protocols[i].Name != p.Name || string(m.protocols[i].Metadata) != string(p.Metadata) {
			return false
		}
	}
	return true
}

// prepareRebalance moves g to PreparingRebalance: every member has to rejoin
// within the largest rebalance timeout.
func (co *coordinator) prepareRebalance(g *group) {
	if g.state == statePreparingRebalance {
		return
	}
	for _, m := range g.members {
		if m.syncCh != nil {
			m.syncCh <- syncError(m.syncV, codeRebalanceInProgress)
			m.syncCh = nil
		}
	}
	wasEmpty := g.state == stateEmpty
	g.state = statePreparingRebalance
	timeout := time.Duration(0)
	for _, m := range g.members {
		timeout = max(timeout, m.rebalanceTimeout)
	}
	if d := co.s.opts.GroupInitialRebalanceDelay; wasEmpty && d > 0 {
		g.delaying = true
		timeout = min(timeout, d)
	}
	g.rebalanceEpoch++
	epoch := g.rebalanceEpoch
	if g.rebalanceTimer != nil {
		g.rebalanceTimer.Stop()
	}
	g.rebalanceTimer = time.AfterFunc(timeout, func() {
		co.mu.Lock()
		defer co.mu.Unlock()
		if co.closed || g.rebalanceEpoch != epoch || g.state != statePreparingRebalance {
			return
		}
		g.delaying = false
		co.completeJoin(g)
	})
}

func (co *coordinator) maybeCompleteJoin(g *group) {
	if g.state != statePreparingRebalance || g.delaying {
		return
	}
	for _, m := range g.members {
		if m.joinCh == nil {
			return
		}
	}
	co.completeJoin(g)
}

// completeJoin ends PreparingRebalance: members that did not rejoin are
// removed, a protocol is chosen, the generation advances and every waiting
// member gets its JoinGroup response (the leader with all members'
// metadata).
func (co *coordinator) completeJoin(g *group) {
	g.rebalanceEpoch++
	if g.rebalanceTimer != nil {
		g.rebalanceTimer.Stop()
	}
	for id, m := range g.members {
		if m.joinCh == nil {
			co.s.logger.Info("Kafka group member removed: did not rejoin within the rebalance timeout", "group", g.name, "member", id)
			co.drop(g, m, codeUnknownMember)
		}
	}
	g.generation++
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader = stateEmpty, "", ""
		return
	}
	g.protocol = chooseProtocol(g)
	if _, ok := g.members[g.leader]; !ok {
		g.leader = ""
		for _, m := range g.members {
			if g.leader == "" || m.joinSeq < g.members[g.leader].joinSeq {
				g.leader = m.id
			}
		}
	}
	g.state = stateCompletingRebalance
	for _, m := range g.members {
		m.joinCh <- g.joinResponse(m, m.joinV)
		m.joinCh = nil
		co.touch(g, m)
	}
}

func (g *group) joinResponse(m *member, v int16) *kmsg.JoinGroupResponse {
	r := kmsg.NewPtrJoinGroupResponse()
	r.Version = v
	r.Generation = g.generation
	r.ProtocolType = strPtr(g.protocolType)
	r.Protocol = strPtr(g.protocol)
	r.LeaderID = g.leader
	r.MemberID = m.id
	if m.id == g.leader {
		ids := make([]string, 0, len(g.members))
		for id := range g.members {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return g.members[ids[i]].joinSeq < g.members[ids[j]].joinSeq })
		for _, id := range ids {
			o := g.members[id]
			jm := kmsg.NewJoinGroupResponseMember()
			jm.MemberID, jm.InstanceID = o.id, o.instanceID
			for _, p := range o.protocols {
				if p.Name == g.protocol {
					jm.ProtocolMetadata = p.Metadata
					break
				}
			}
			r.Members = append(r.Members, jm)
		}
	}
	return r
}

// chooseProtocol picks among the protocols every member supports the one
// most members prefer (each votes for its first supported candidate), ties
// going to the earlier in the leader's or oldest member's list; as Kafka.
func chooseProtocol(g *group) string {
	var oldest *member
	for _, m := range g.members {
		if oldest == nil || m.joinSeq < oldest.joinSeq {
			oldest = m
		}
	}
	if l, ok := g.members[g.leader]; ok {
		oldest = l
	}
	var candidates []string
	for _, p := range oldest.protocols {
		all := true
		for _, m := range g.members {
			if !slices.ContainsFunc(m.protocols, func(q kmsg.JoinGroupRequestProtocol) bool { return q.Name == p.Name }) {
				all = false
				break
			}
		}
		if all {
			candidates = append(candidates, p.Name)
		}
	}
	votes := map[string]int{}
	for _, m := range g.members {
		for _, p := range m.protocols {
			if slices.Contains(candidates, p.Name) {
				votes[p.Name]++
				break
			}
		}
	}
	best := ""
	for _, c := range candidates {
		if best == "" || votes[c] > votes[best] {
			best = c
		}
	}
	return best
}

// touch restarts a member's session timer.
func (co *coordinator) touch(g *group, m *member) {
	m.deadline = time.Now().Add(m.sessionTimeout)
	if m.timer != nil {
		m.timer.Reset(m.sessionTimeout)
		return
	}
	m.timer = time.AfterFunc(m.sessionTimeout, func() { co.expire(g, m) })
}

func (co *coordinator) expire(g *group, m *member) {
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.closed || g.members[m.id] != m || m.joinCh != nil {
		return // gone, or waiting in JoinGroup (the rebalance timer governs)
	}
	if left := time.Until(m.deadline); left > 0 {
		m.timer.Reset(left)
		return
	}
	co.s.logger.Info("Kafka group member removed: session timed out", "group", g.name, "member", m.id, "timeout", m.sessionTimeout)
	co.remove(g, m, codeUnknownMember)
}

// drop deletes m from g, answering its pending requests with code.
func (co *coordinator) drop(g *group, m *member, code int16) {
	delete(g.members, m.id)
	if m.timer != nil {
		m.timer.Stop()
	}
	if m.joinCh != nil {
		m.joinCh <- joinError(m.joinV, m.id, code)
		m.joinCh = nil
	}
	if m.syncCh != nil {
		m.syncCh <- syncError(m.syncV, code)
		m.syncCh = nil
	}
}

// remove deletes m and rebalances the rest.
func (co *coordinator) remove(g *group, m *member, code int16) {
	co.drop(g, m, code)
	switch {
	case len(g.members) == 0 && g.state != statePreparingRebalance:
		g.state, g.protocol, g.leader = stateEmpty, "", ""
		g.generation++
	case g.state == stateStable || g.state == stateCompletingRebalance:
		co.prepareRebalance(g)
	default:
		co.maybeCompleteJoin(g)
		if len(g.members) == 0 && g.state == statePreparingRebalance {
			co.completeJoin(g)
		}
	}
}

// member validates a request's group, member and generation.
func (co *coordinator) member(groupName, memberID string, generation int32) (*group, *member, int16) {
	g := co.groups[groupName]
	if g == nil {
		return nil, nil, codeUnknownMember
	}
	m := g.members[memberID]
	if m == nil {
		return g, nil, codeUnknownMember
	}
	if generation != g.generation {
		return g, m, codeIllegalGeneration
	}
	return g, m, 0
}

func (co *coordinator) sync(ctx context.Context, req *kmsg.SyncGroupRequest) kmsg.Response {
	v := req.Version
	co.mu.Lock()
	if co.closed {
		co.mu.Unlock()
		return syncError(v, kerr.NotCoordinator.Code)
	}
	g, m, code := co.member(req.Group, req.MemberID, req.Generation)
	if code != 0 {
		co.mu.Unlock()
		return syncError(v, code)
	}
	if v >= 5 && (req.ProtocolType != nil && *req.ProtocolType != g.protocolType || req.Protocol != nil && *req.Protocol != g.protocol) {
		co.mu.Unlock()
		return syncError(v, codeInconsistentProtocol)
	}
	co.touch(g, m)
	switch g.state {
	case statePreparingRebalance:
		co.mu.Unlock()
		return syncError(v, codeRebalanceInProgress)
	case stateStable:
		resp := g.syncResponse(m, v)
		co.mu.Unlock()
		return resp
	}
	// CompletingRebalance: wait for the leader's assignment.
	ch := make(chan *kmsg.SyncGroupResponse, 1)
	if m.syncCh != nil {
		m.syncCh <- syncError(m.syncV, codeRebalanceInProgress)
	}
	m.syncCh, m.syncV = ch, v
	if m.id == g.leader {
		assigned := map[string][]byte{}
		for _, a := range req.GroupAssignment {
			assigned[a.MemberID] = a.MemberAssignment
		}
		g.state = stateStable
		for _, o := range g.members {
			o.assignment = assigned[o.id]
			if o.syncCh != nil {
				o.syncCh <- g.syncResponse(o, o.syncV)
				o.syncCh = nil
			}
		}
	}
	co.mu.Unlock()
	select {
	case resp := <-ch:
		return resp
	case <-ctx.Done():
		return syncError(v, kerr.NotCoordinator.Code)
	}
}

func (g *group) syncResponse(m *member, v int16) *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupResponse()
	r.Version = v
	r.ProtocolType = strPtr(g.protocolType)
	r.Protocol = strPtr(g.protocol)
	r.MemberAssignment = m.assignment
	if r.MemberAssignment == nil {
		r.MemberAssignment = []byte{}
	}
	return r
}

func (co *coordinator) heartbeat(req *kmsg.HeartbeatRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.closed {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	g, m, code := co.member(req.Group, req.MemberID, req.Generation)
	if m != nil {
		co.touch(g, m)
	}
	if code == 0 && g.state == statePreparingRebalance {
		code = codeRebalanceInProgress
	}
	resp.ErrorCode = code
	return resp
}

func (co *coordinator) leave(req *kmsg.LeaveGroupRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.LeaveGroupResponse)
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[req.Group]
	leaveOne := func(id string, instance *string) int16 {
		if g == nil {
			return codeUnknownMember
		}
		m := g.members[id]
		if m == nil && instance != nil {
			for _, o := range g.members {
				if o.instanceID != nil && *o.instanceID == *instance {
					m = o
					break
				}
			}
		}
		if m == nil {
			return codeUnknownMember
		}
		co.s.logger.Debug("Kafka group member left", "group", g.name, "member", m.id)
		co.remove(g, m, codeUnknownMember)
		return 0
	}
	if req.Version < 3 {
		resp.ErrorCode = leaveOne(req.MemberID, nil)
		return resp
	}
	for _, rm := range req.Members {
		om := kmsg.NewLeaveGroupResponseMember()
		om.MemberID, om.InstanceID = rm.MemberID, rm.InstanceID
		om.ErrorCode = leaveOne(rm.MemberID, rm.InstanceID)
		resp.Members = append(resp.Members, om)
	}
	return resp
}

// commitCheck validates an OffsetCommit against group membership. A commit
// without generation and member (a standalone consumer, kcat -o, an admin
// tool) is allowed while the group has no members, as in Kafka.
func (co *coordinator) commitCheck(groupName, memberID string, generation int32) int16 {
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[groupName]
	if generation < 0 && memberID == "" {
		if g == nil || len(g.members) == 0 {
			return 0
		}
		return codeUnknownMember
	}
	g, m, code := co.member(groupName, memberID, generation)
	if code != 0 {
		return code
	}
	co.touch(g, m)
	if g.state == statePreparingRebalance {
		return codeRebalanceInProgress
	}
	return 0
}

// groupSummary is one group as ListGroups and DescribeGroups see it.
type groupSummary struct {
	state, protocolType, protocol string
	members                       []kmsg.DescribeGroupsResponseGroupMember
}

func (co *coordinator) describe(name string) (groupSummary, bool) {
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[name]
	if g == nil {
		return groupSummary{}, false
	}
	gs := groupSummary{state: g.state.String(), protocolType: g.protocolType}
	if g.state == stateStable {
		gs.protocol = g.protocol
	}
	ids := make([]string, 0, len(g.members))
	for id := range g.members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := g.members[id]
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.InstanceID, dm.ClientID, dm.ClientHost = m.id, m.instanceID, m.clientID, m.clientHost
		if g.state == stateStable {
			for _, p := range m.protocols {
				if p.Name == g.protocol {
					dm.ProtocolMetadata = p.Metadata
				}
			}
			dm.MemberAssignment = m.assignment
		}
		gs.members = append(gs.members, dm)
	}
	return gs, true
}

func (co *coordinator) names() []string {
	co.mu.Lock()
	defer co.mu.Unlock()
	out := make([]string, 0, len(co.groups))
	for n := range co.groups {
		out = append(out, n)
	}
	return out
}
