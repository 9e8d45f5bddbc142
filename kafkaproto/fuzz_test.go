package kafkaproto

import (
	"context"
	"net"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/log/embedded"
)

// FuzzRequest feeds arbitrary request frames (after the size prefix) to the
// header parsing, body decoding and dispatch of a connection, then encodes
// the response. Nothing may panic. The server's context is cancelled so
// that long polls and group joins return at once.
func FuzzRequest(f *testing.F) {
	seeds := []kmsg.Request{
		kmsg.NewPtrApiVersionsRequest(),
		kmsg.NewPtrMetadataRequest(),
		kmsg.NewPtrFindCoordinatorRequest(),
		kmsg.NewPtrInitProducerIDRequest(),
	}
	pr := produceReq("fz", testBatch(-1, -1, -1, "a", "b"))
	seeds = append(seeds, pr)
	fr := kmsg.NewPtrFetchRequest()
	fr.SetVersion(11)
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = "fz"
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.PartitionMaxBytes = 1 << 20
	ft.Partitions = append(ft.Partitions, fp)
	fr.Topics = append(fr.Topics, ft)
	seeds = append(seeds, fr)
	jg := kmsg.NewPtrJoinGroupRequest()
	jg.SetVersion(5)
	jg.Group, jg.ProtocolType, jg.SessionTimeoutMillis = "g", "consumer", 10000
	jg.Protocols = append(jg.Protocols, kmsg.JoinGroupRequestProtocol{Name: "range", Metadata: []byte{0}})
	seeds = append(seeds, jg)
	oc := kmsg.NewPtrOffsetCommitRequest()
	oc.SetVersion(8)
	oc.Group, oc.Generation = "g", -1
	seeds = append(seeds, oc)
	ct := kmsg.NewPtrCreateTopicsRequest()
	ct.SetVersion(5)
	ct.Topics = append(ct.Topics, kmsg.CreateTopicsRequestTopic{Topic: "new", NumPartitions: 1, ReplicationFactor: 1})
	seeds = append(seeds, ct)
	for _, r := range seeds {
		if r.GetVersion() == 0 && r.MaxVersion() > 0 {
			r.SetVersion(min(r.MaxVersion(), supported[r.Key()].max))
		}
		f.Add(appendRequest(nil, 1, r)[4:])
	}
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff})

	l, err := embedded.Open(f.TempDir(), embedded.Options{Logger: quietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	if err := l.CreateTopic(context.Background(), "fz", mlog.TopicConfig{Partitions: 2}); err != nil {
		f.Fatal(err)
	}
	s, err := New(l, Options{Logger: quietLogger(), AutoCreateTopics: false})
	if err != nil {
		f.Fatal(err)
	}
	s.cancel()
	defer s.Close()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()

	f.Fuzz(func(t *testing.T, body []byte) {
		c := newConn(s, a)
		p, err := c.handleFrame(body)
		if err != nil || p == nil {
			return
		}
		resp := p.resp
		if p.wait != nil {
			resp = p.wait()
		}
		if resp != nil {
			appendResponse(nil, p.corr, resp)
		}
	})
}
