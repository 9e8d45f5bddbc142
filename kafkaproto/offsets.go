package kafkaproto

import (
	"context"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// Committed offsets are stored in the log (log.CommitOffsets, one write per
// OffsetCommit request), under the group name with Options.GroupPrefix, so
// Millstream's lag metrics and UI see Kafka consumer groups like its own
// consumers. Kafka's per-offset metadata string and leader epoch are not
// stored.

func (c *conn) logGroup(name string) string { return c.s.opts.GroupPrefix + name }

func (c *conn) handleOffsetCommit(ctx context.Context, req *kmsg.OffsetCommitRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	code := int16(0)
	if req.Group == "" {
		code = codeInvalidGroupID
	} else {
		code = c.s.groups.commitCheck(req.Group, req.MemberID, req.Generation)
	}
	var commit []mlog.TopicPartitionOffset
	var at [][2]int // where each of commit is answered: topic, partition index
	for _, rt := range req.Topics {
		ot := kmsg.NewOffsetCommitResponseTopic()
		ot.Topic = rt.Topic
		tcode := code
		if tcode == 0 && !c.allowed(rt.Topic, ActionRead) {
			tcode = codeTopicAuth
		}
		var nparts int
		if tcode == 0 {
			info, err := c.s.l.Topic(ctx, rt.Topic)
			tcode = logErrorCode(err)
			nparts = len(info.Partitions)
		}
		for _, rp := range rt.Partitions {
			op := kmsg.NewOffsetCommitResponseTopicPartition()
			op.Partition = rp.Partition
			op.ErrorCode = tcode
			if tcode == 0 {
				if rp.Partition < 0 || int(rp.Partition) >= nparts {
					op.ErrorCode = codeUnknownTopic
				} else {
					commit = append(commit, mlog.TopicPartitionOffset{Topic: rt.Topic, Partition: rp.Partition, Offset: rp.Offset})
					at = append(at, [2]int{len(resp.Topics), len(ot.Partitions)})
				}
			}
			ot.Partitions = append(ot.Partitions, op)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	// Every valid offset of the request in one durable write.
	if len(commit) > 0 {
		if err := mlog.CommitOffsets(ctx, c.s.l, c.logGroup(req.Group), commit); err != nil {
			c.s.logger.Warn("Kafka offset commit failed", "group", req.Group, "offsets", len(commit), "error", err.Error())
			for _, ix := range at {
				resp.Topics[ix[0]].Partitions[ix[1]].ErrorCode = logErrorCode(err)
			}
		}
	}
	return resp
}

func (c *conn) handleOffsetFetch(ctx context.Context, req *kmsg.OffsetFetchRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
	if req.Group == "" {
		resp.ErrorCode = codeInvalidGroupID
		return resp
	}
	lg := c.logGroup(req.Group)
	topics := req.Topics
	if topics == nil {
		// All committed offsets of the group.
		groups, err := c.s.l.Groups(ctx)
		if err != nil {
			resp.ErrorCode = logErrorCode(err)
			return resp
		}
		byTopic := map[string][]int32{}
		for _, g := range groups {
			if g.Group != lg {
				continue
			}
			for _, o := range g.Offsets {
				byTopic[o.Topic] = append(byTopic[o.Topic], o.Partition)
			}
		}
		names := make([]string, 0, len(byTopic))
		for t := range byTopic {
			if c.allowed(t, ActionRead) {
				names = append(names, t)
			}
		}
		sort.Strings(names)
		for _, t := range names {
			rt := kmsg.NewOffsetFetchRequestTopic()
			rt.Topic, rt.Partitions = t, byTopic[t]
			topics = append(topics, rt)
		}
	}
	for _, rt := range topics {
		ot := kmsg.NewOffsetFetchResponseTopic()
		ot.Topic = rt.Topic
		allowed := c.allowed(rt.Topic, ActionRead)
		for _, p := range rt.Partitions {
			op := kmsg.NewOffsetFetchResponseTopicPartition()
			op.Partition, op.Offset, op.LeaderEpoch, op.Metadata = p, -1, -1, strPtr("")
			if !allowed {
				op.ErrorCode = codeTopicAuth
			} else if off, ok, err := c.s.l.CommittedOffset(ctx, lg, rt.Topic, p); err != nil {
				op.ErrorCode = logErrorCode(err)
			} else if ok {
				op.Offset = off
			}
			ot.Partitions = append(ot.Partitions, op)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	return resp
}

// offsetOnlyGroups lists the Kafka groups (prefix stripped) that have
// committed offsets in the log.
func (c *conn) offsetOnlyGroups(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	groups, err := c.s.l.Groups(ctx)
	if err != nil {
		return out
	}
	for _, g := range groups {
		if name, ok := strings.CutPrefix(g.Group, c.s.opts.GroupPrefix); ok && name != "" {
			out[name] = true
		}
	}
	return out
}

func (c *conn) handleListGroups(ctx context.Context, req *kmsg.ListGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListGroupsResponse)
	seen := map[string]bool{}
	add := func(name, state, ptype string) {
		if seen[name] {
			return
		}
		seen[name] = true
		if len(req.StatesFilter) > 0 && !containsFold(req.StatesFilter, state) {
			return
		}
		g := kmsg.NewListGroupsResponseGroup()
		g.Group, g.ProtocolType, g.GroupState, g.GroupType = name, ptype, state, "classic"
		resp.Groups = append(resp.Groups, g)
	}
	names := c.s.groups.names()
	sort.Strings(names)
	for _, n := range names {
		if gs, ok := c.s.groups.describe(n); ok {
			add(n, gs.state, gs.protocolType)
		}
	}
	stored := c.offsetOnlyGroups(ctx)
	storedNames := make([]string, 0, len(stored))
	for n := range stored {
		storedNames = append(storedNames, n)
	}
	sort.Strings(storedNames)
	for _, n := range storedNames {
		add(n, "Empty", "consumer")
	}
	return resp
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func (c *conn) handleDescribeGroups(ctx context.Context, req *kmsg.DescribeGroupsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeGroupsResponse)
	var stored map[string]bool
	for _, name := range req.Groups {
		g := kmsg.NewDescribeGroupsResponseGroup()
		g.Group = name
		if gs, ok := c.s.groups.describe(name); ok {
			g.State, g.ProtocolType, g.Protocol, g.Members = gs.state, gs.protocolType, gs.protocol, gs.members
		} else {
			if stored == nil {
				stored = c.offsetOnlyGroups(ctx)
			}
			g.State = "Dead"
			if stored[name] {
				g.State, g.ProtocolType = "Empty", "consumer"
			}
		}
		resp.Groups = append(resp.Groups, g)
	}
	return resp
}
