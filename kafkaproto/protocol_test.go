package kafkaproto

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// rawConn speaks the Kafka framing directly, for requests clients would not
// send on their own.
type rawConn struct {
	t    *testing.T
	nc   net.Conn
	corr int32
}

func dialRaw(t *testing.T, addr string) *rawConn {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

func appendRequest(dst []byte, corr int32, req kmsg.Request) []byte {
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.Key()))
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.GetVersion()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	dst = binary.BigEndian.AppendUint16(dst, 4)
	dst = append(dst, "test"...)
	if req.IsFlexible() {
		dst = append(dst, 0)
	}
	dst = req.AppendTo(dst)
	binary.BigEndian.PutUint32(dst, uint32(len(dst)-4))
	return dst
}

// send writes a raw frame and returns the response body after the
// correlation id.
func (rc *rawConn) sendFrame(frame []byte, corr int32) []byte {
	rc.t.Helper()
	_ = rc.nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := rc.nc.Write(frame); err != nil {
		rc.t.Fatal(err)
	}
	var size [4]byte
	if _, err := io.ReadFull(rc.nc, size[:]); err != nil {
		rc.t.Fatalf("reading response: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(rc.nc, body); err != nil {
		rc.t.Fatal(err)
	}
	if got := int32(binary.BigEndian.Uint32(body)); got != corr {
		rc.t.Fatalf("correlation id %d, want %d", got, corr)
	}
	return body[4:]
}

func (rc *rawConn) request(req kmsg.Request) kmsg.Response {
	rc.t.Helper()
	rc.corr++
	body := rc.sendFrame(appendRequest(nil, rc.corr, req), rc.corr)
	resp := req.ResponseKind()
	if resp.IsFlexible() && req.Key() != kmsg.ApiVersions.Int16() {
		body = body[1:] // empty header tags
	}
	if err := resp.ReadFrom(body); err != nil {
		rc.t.Fatalf("parsing %T: %v", resp, err)
	}
	return resp
}

// TestUnsupportedRequests: requests the server does not implement get an
// error code and the connection keeps working.
func TestUnsupportedRequests(t *testing.T) {
	env := startEnv(t, Options{})
	rc := dialRaw(t, env.addr)

	// A request kmsg knows but the server does not implement.
	acls := kmsg.NewPtrDescribeACLsRequest()
	acls.SetVersion(1)
	if r := rc.request(acls).(*kmsg.DescribeACLsResponse); r.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("DescribeACLs: error code %d, want UNSUPPORTED_VERSION", r.ErrorCode)
	}
	// A version above what the server advertises.
	md := kmsg.NewPtrMetadataRequest()
	md.SetVersion(13)
	if r := rc.request(md).(*kmsg.MetadataResponse); r.ErrorCode != kerr.UnsupportedVersion.Code {
		t.Fatalf("Metadata v13: error code %d, want UNSUPPORTED_VERSION", r.ErrorCode)
	}
	// An API key nobody knows: a bare error code.
	rc.corr++
	frame := []byte{0, 0, 0, 0, 0x03, 0xe7, 0, 0, 0, 0, 0, byte(rc.corr), 0xff, 0xff}
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	if body := rc.sendFrame(frame, rc.corr); len(body) != 2 || int16(binary.BigEndian.Uint16(body)) != kerr.UnsupportedVersion.Code {
		t.Fatalf("unknown key 999: body %x, want the UNSUPPORTED_VERSION code", body)
	}
	// ApiVersions newer than supported gets the KIP-511 v0 answer.
	av := kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(4)
	rc.corr++
	body := rc.sendFrame(appendRequest(nil, rc.corr, av), rc.corr)
	v0 := kmsg.NewPtrApiVersionsResponse()
	if err := v0.ReadFrom(body); err != nil || v0.ErrorCode != kerr.UnsupportedVersion.Code || len(v0.ApiKeys) == 0 {
		t.Fatalf("ApiVersions v4: %v, code %d, %d keys", err, v0.ErrorCode, len(v0.ApiKeys))
	}
	// The connection still works.
	av = kmsg.NewPtrApiVersionsRequest()
	av.SetVersion(3)
	av.ClientSoftwareName, av.ClientSoftwareVersion = "test", "1"
	r := rc.request(av).(*kmsg.ApiVersionsResponse)
	if r.ErrorCode != 0 || len(r.ApiKeys) != len(supported) {
		t.Fatalf("ApiVersions after errors: code %d, %d keys", r.ErrorCode, len(r.ApiKeys))
	}
	for _, k := range r.ApiKeys {
		if k.ApiKey == kmsg.DescribeACLs.Int16() {
			t.Fatal("DescribeACLs advertised")
		}
	}
}

// testBatch encodes one uncompressed batch of an idempotent producer.
func testBatch(pid int64, epoch int16, seq int32, values ...string) []byte {
	var recs []byte
	for i, v := range values {
		var body []byte
		body = append(body, 0)
		body = binary.AppendVarint(body, 0)
		body = binary.AppendVarint(body, int64(i))
		body = binary.AppendVarint(body, -1)
		body = binary.AppendVarint(body, int64(len(v)))
		body = append(body, v...)
		body = binary.AppendVarint(body, 0)
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	now := time.Now().UnixMilli()
	rb := kmsg.RecordBatch{
		Magic: 2, LastOffsetDelta: int32(len(values) - 1), FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: int32(len(values)), Records: recs,
	}
	b := rb.AppendTo(nil)
	binary.BigEndian.PutUint32(b[8:], uint32(len(b)-12))
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], castagnoli))
	return b
}

func produceReq(topic string, batch []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.SetVersion(7)
	req.Acks, req.TimeoutMillis = -1, 5000
	t := kmsg.NewProduceRequestTopic()
	t.Topic = topic
	p := kmsg.NewProduceRequestTopicPartition()
	p.Records = batch
	t.Partitions = append(t.Partitions, p)
	req.Topics = append(req.Topics, t)
	return req
}

// TestIdempotentSequences: a resent batch is answered with its original
// offset and not appended again; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; an
// unknown producer id UNKNOWN_PRODUCER_ID; a corrupt CRC CORRUPT_MESSAGE.
func TestIdempotentSequences(t *testing.T) {
	env := startEnv(t, Options{})
	env.createTopic(t, "seq", 1)
	rc := dialRaw(t, env.addr)
	ip := kmsg.NewPtrInitProducerIDRequest()
	ip.SetVersion(4)
	ipr := rc.request(ip).(*kmsg.InitProducerIDResponse)
	if ipr.ErrorCode != 0 || ipr.ProducerID < 0 {
		t.Fatalf("InitProducerID: %+v", ipr)
	}
	pid, epoch := ipr.ProducerID, ipr.ProducerEpoch
	part := func(req *kmsg.ProduceRequest) kmsg.ProduceResponseTopicPartition {
		return rc.request(req).(*kmsg.ProduceResponse).Topics[0].Partitions[0]
	}
	if p := part(produceReq("seq", testBatch(pid, epoch, 0, "a", "b"))); p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("first batch: code %d base %d", p.ErrorCode, p.BaseOffset)
	}
	if p := part(produceReq("seq", testBatch(pid, epoch, 2, "c"))); p.ErrorCode != 0 || p.BaseOffset != 2 {
		t.Fatalf("second batch: code %d base %d", p.ErrorCode, p.BaseOffset)
	}
	if p := part(produceReq("seq", testBatch(pid, epoch, 0, "a", "b"))); p.ErrorCode != 0 || p.BaseOffset != 0 {
		t.Fatalf("resent first batch: code %d base %d, want no error and base 0", p.ErrorCode, p.BaseOffset)
	}
	if p := part(produceReq("seq", testBatch(pid, epoch, 7, "x"))); p.ErrorCode != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("gap: code %d, want OUT_OF_ORDER_SEQUENCE_NUMBER", p.ErrorCode)
	}
	if p := part(produceReq("seq", testBatch(pid+1000, 0, 0, "x"))); p.ErrorCode != kerr.UnknownProducerID.Code {
		t.Fatalf("unknown pid: code %d, want UNKNOWN_PRODUCER_ID", p.ErrorCode)
	}
	bad := testBatch(-1, -1, -1, "x")
	bad[len(bad)-1] ^= 0xff
	if p := part(produceReq("seq", bad)); p.ErrorCode != kerr.CorruptMessage.Code {
		t.Fatalf("bad CRC: code %d, want CORRUPT_MESSAGE", p.ErrorCode)
	}
	if got := env.readAll(t, "seq"); len(got) != 3 || string(got[2].Value) != "c" {
		t.Fatalf("log has %d records, want a, b, c once each", len(got))
	}
	// KIP-360 epoch bump restarts sequences.
	ip.ProducerID, ip.ProducerEpoch = pid, epoch
	if r := rc.request(ip).(*kmsg.InitProducerIDResponse); r.ErrorCode != 0 || r.ProducerID != pid || r.ProducerEpoch != epoch+1 {
		t.Fatalf("epoch bump: %+v", r)
	}
	if p := part(produceReq("seq", testBatch(pid, epoch+1, 0, "d"))); p.ErrorCode != 0 || p.BaseOffset != 3 {
		t.Fatalf("after bump: code %d base %d", p.ErrorCode, p.BaseOffset)
	}
	if p := part(produceReq("seq", testBatch(pid, epoch, 3, "x"))); p.ErrorCode != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("old epoch: code %d, want INVALID_PRODUCER_EPOCH", p.ErrorCode)
	}
}

// TestSessionTimeoutRebalance: a member that stops heartbeating is removed
// after its session timeout and the other member is told to rejoin.
func TestSessionTimeoutRebalance(t *testing.T) {
	env := startEnv(t, Options{})
	a, b := dialRaw(t, env.addr), dialRaw(t, env.addr)
	join := func(rc *rawConn, member string) *kmsg.JoinGroupResponse {
		req := kmsg.NewPtrJoinGroupRequest()
		req.SetVersion(5)
		req.Group, req.MemberID, req.ProtocolType = "st", member, "consumer"
		req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = 1000, 3000
		p := kmsg.NewJoinGroupRequestProtocol()
		p.Name, p.Metadata = "range", []byte{1}
		req.Protocols = append(req.Protocols, p)
		return rc.request(req).(*kmsg.JoinGroupResponse)
	}
	first := join(a, "")
	if first.ErrorCode != kerr.MemberIDRequired.Code || first.MemberID == "" {
		t.Fatalf("first join: %+v", first)
	}
	ja := join(a, first.MemberID)
	if ja.ErrorCode != 0 || ja.LeaderID != ja.MemberID || ja.Generation != 1 || len(ja.Members) != 1 {
		t.Fatalf("join: %+v", ja)
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.SetVersion(3)
	sync.Group, sync.MemberID, sync.Generation = "st", ja.MemberID, ja.Generation
	asg := kmsg.NewSyncGroupRequestGroupAssignment()
	asg.MemberID, asg.MemberAssignment = ja.MemberID, []byte("all")
	sync.GroupAssignment = append(sync.GroupAssignment, asg)
	if r := a.request(sync).(*kmsg.SyncGroupResponse); r.ErrorCode != 0 || string(r.MemberAssignment) != "all" {
		t.Fatalf("sync: %+v", r)
	}
	// b joins; a stops heartbeating and does not rejoin, so the rebalance
	// waits for a until its 1 s session expires (as in Kafka, a session
	// timeout removes a member during a rebalance too) and ends with b
	// leading generation 2 alone; a's next heartbeat learns it is gone.
	id := join(b, "").MemberID
	start := time.Now()
	jb := join(b, id)
	if jb.ErrorCode != 0 || jb.LeaderID != id || jb.Generation != 2 || len(jb.Members) != 1 {
		t.Fatalf("join b: %+v", jb)
	}
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Fatalf("rebalance completed after %v without waiting for a", waited)
	}
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.SetVersion(3)
	hb.Group, hb.MemberID, hb.Generation = "st", ja.MemberID, ja.Generation
	if r := a.request(hb).(*kmsg.HeartbeatResponse); r.ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("heartbeat of the removed member: code %d, want UNKNOWN_MEMBER_ID", r.ErrorCode)
	}
}

// TestSASLPlain: with an Authenticator and no anonymous access, kgo with
// the right password works, with a wrong one fails, and without SASL the
// connection is refused; the Authorizer hides and denies topics.
func TestSASLPlain(t *testing.T) {
	env := startEnv(t, Options{
		Authenticator: func(u, p string) bool { return u == "alice" && p == "secret" },
		Authorizer: func(user, topic string, a Action) bool {
			return topic == "open" || topic == "readonly" && a == ActionRead
		},
	})
	env.createTopic(t, "open", 1)
	env.createTopic(t, "readonly", 1)
	env.createTopic(t, "hidden", 1)
	ctx := testCtx(t, 30*time.Second)

	good := newClient(t, env.addr, kgo.SASL(plain.Auth{User: "alice", Pass: "secret"}.AsMechanism()))
	defer good.Close()
	if err := good.ProduceSync(ctx, &kgo.Record{Topic: "open", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatalf("authenticated produce: %v", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := good.ProduceSync(pctx, &kgo.Record{Topic: "readonly", Value: []byte("v")}).FirstErr()
	cancel()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce to a read-only topic: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	md := kmsg.NewPtrMetadataRequest()
	resp, err := md.RequestWith(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range resp.Topics {
		names = append(names, *tp.Topic)
	}
	if len(names) != 2 {
		t.Fatalf("metadata lists %v, want open and readonly only", names)
	}

	bad := newClient(t, env.addr, kgo.SASL(plain.Auth{User: "alice", Pass: "wrong"}.AsMechanism()), kgo.RetryTimeout(time.Second))
	defer bad.Close()
	pctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(pctx, bad); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("wrong password: %v, want SASL_AUTHENTICATION_FAILED", err)
	}

	// Without SASL only ApiVersions is answered; anything else closes.
	rc := dialRaw(t, env.addr)
	av := kmsg.NewPtrApiVersionsRequest()
	if r := rc.request(av).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 {
		t.Fatalf("ApiVersions before auth: %d", r.ErrorCode)
	}
	rc.corr++
	if _, err := rc.nc.Write(appendRequest(nil, rc.corr, kmsg.NewPtrMetadataRequest())); err != nil {
		t.Fatal(err)
	}
	_ = rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := rc.nc.Read(make([]byte, 1)); err == nil {
		t.Fatalf("metadata before auth answered (%d bytes), want the connection closed", n)
	}
	if got := len(env.readAll(t, "open")); got != 1 {
		t.Fatalf("open has %d records, want 1", got)
	}
}
