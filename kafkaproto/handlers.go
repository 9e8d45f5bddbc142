package kafkaproto

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	mlog "github.com/millstream/millstream/log"
)

// topicID derives a stable topic id from the name. The log has no topic ids;
// Metadata v10+ carries one, and a hash keeps it the same across restarts.
func topicID(name string) [16]byte {
	sum := sha256.Sum256([]byte("millstream-topic\x00" + name))
	var id [16]byte
	copy(id[:], sum[:16])
	id[6] = id[6]&0x0f | 0x40 // UUID version 4 layout, variant RFC 4122
	id[8] = id[8]&0x3f | 0x80
	return id
}

func (c *conn) handleMetadata(ctx context.Context, req *kmsg.MetadataRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	host, port := c.advertised()
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = c.s.opts.NodeID, host, port
	resp.Brokers = []kmsg.MetadataResponseBroker{b}
	resp.ClusterID = strPtr(c.s.opts.ClusterID)
	resp.ControllerID = c.s.opts.NodeID

	visible := func(name string) bool { return c.allowed(name, ActionRead) || c.allowed(name, ActionWrite) }
	if req.Topics == nil || req.Version == 0 && len(req.Topics) == 0 {
		infos, err := c.s.l.Topics(ctx)
		if err != nil {
			c.s.logger.Warn("Kafka metadata: listing topics failed", "error", err.Error())
		}
		for _, info := range infos {
			if visible(info.Name) {
				resp.Topics = append(resp.Topics, c.metadataTopic(info.Name, info, nil))
			}
		}
		return resp
	}
	var byID map[[16]byte]string
	for _, rt := range req.Topics {
		var name string
		switch {
		case rt.Topic != nil:
			name = *rt.Topic
		default:
			// v10+ may ask by topic id only.
			if byID == nil {
				byID = map[[16]byte]string{}
				infos, _ := c.s.l.Topics(ctx)
				for _, info := range infos {
					byID[topicID(info.Name)] = info.Name
				}
			}
			name = byID[rt.TopicID]
		}
		if name == "" {
			t := kmsg.NewMetadataResponseTopic()
			t.TopicID = rt.TopicID
			t.ErrorCode = codeUnknownTopic
			resp.Topics = append(resp.Topics, t)
			continue
		}
		if !visible(name) {
			t := kmsg.NewMetadataResponseTopic()
			t.Topic, t.ErrorCode = strPtr(name), codeTopicAuth
			resp.Topics = append(resp.Topics, t)
			continue
		}
		create := req.AllowAutoTopicCreation || req.Version < 4
		info, err := c.s.topicInfo(ctx, name, create && c.allowed(name, ActionWrite))
		resp.Topics = append(resp.Topics, c.metadataTopic(name, info, err))
	}
	return resp
}

func (c *conn) metadataTopic(name string, info mlog.TopicInfo, err error) kmsg.MetadataResponseTopic {
	t := kmsg.NewMetadataResponseTopic()
	t.Topic = strPtr(name)
	t.TopicID = topicID(name)
	if err != nil {
		t.ErrorCode = logErrorCode(err)
		if errors.Is(err, mlog.ErrInvalidTopicName) {
			t.ErrorCode = codeInvalidTopic
		}
		return t
	}
	node := c.s.opts.NodeID
	for _, p := range info.Partitions {
		mp := kmsg.NewMetadataResponseTopicPartition()
		mp.Partition = p.Partition
		mp.Leader = node
		// No leader epochs: -1 tells clients not to validate offsets
		// with OffsetForLeaderEpoch, which a single node does not need.
		mp.LeaderEpoch = -1
		mp.Replicas = []int32{node}
		mp.ISR = []int32{node}
		t.Partitions = append(t.Partitions, mp)
	}
	return t
}

func (c *conn) handleFindCoordinator(req *kmsg.FindCoordinatorRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
	if req.CoordinatorType != 0 {
		resp.ErrorCode = codeCoordinatorNotAvail
		resp.ErrorMessage = strPtr("transactions are not supported by Millstream's Kafka endpoint")
		resp.NodeID = -1
		return resp
	}
	if req.CoordinatorKey == "" {
		resp.ErrorCode = codeInvalidGroupID
		resp.NodeID = -1
		return resp
	}
	resp.NodeID = c.s.opts.NodeID
	resp.Host, resp.Port = c.advertised()
	return resp
}

func (c *conn) handleListOffsets(ctx context.Context, req *kmsg.ListOffsetsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range req.Topics {
		ot := kmsg.NewListOffsetsResponseTopic()
		ot.Topic = rt.Topic
		allowed := c.allowed(rt.Topic, ActionRead)
		var (
			info mlog.TopicInfo
			err  error
		)
		if allowed {
			info, err = c.s.l.Topic(ctx, rt.Topic)
		}
		for _, rp := range rt.Partitions {
			op := kmsg.NewListOffsetsResponseTopicPartition()
			op.Partition = rp.Partition
			op.Offset, op.Timestamp, op.LeaderEpoch = -1, -1, -1
			switch {
			case !allowed:
				op.ErrorCode = codeTopicAuth
			case err != nil:
				op.ErrorCode = logErrorCode(err)
			case rp.Partition < 0 || int(rp.Partition) >= len(info.Partitions):
				op.ErrorCode = codeUnknownTopic
			default:
				pi := info.Partitions[rp.Partition]
				switch rp.Timestamp {
				case -1: // latest
					op.Offset = pi.End
				case -2: // earliest
					op.Offset = pi.Start
				default:
					off, err := c.s.l.OffsetForTime(ctx, rt.Topic, rp.Partition, time.UnixMilli(rp.Timestamp))
					if err != nil {
						op.ErrorCode = logErrorCode(err)
						break
					}
					if off >= pi.End {
						break // no record at or after the time: -1, -1
					}
					recs, err := c.s.l.Fetch(ctx, rt.Topic, rp.Partition, off, mlog.FetchOptions{MaxRecords: 1})
					if err != nil || len(recs) == 0 {
						op.ErrorCode = logErrorCode(err)
						break
					}
					op.Offset, op.Timestamp = recs[0].Offset, recs[0].Timestamp.UnixMilli()
				}
			}
			ot.Partitions = append(ot.Partitions, op)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	return resp
}

func (c *conn) handleInitProducerID(req *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	if req.TransactionalID != nil {
		resp.ErrorCode = codeTxnIDAuth
		return resp
	}
	pid, epoch := int64(-1), int16(-1)
	if req.Version >= 3 {
		pid, epoch = req.ProducerID, req.ProducerEpoch
	}
	id, ep, code := c.s.producers.init(pid, epoch)
	if code == codeProducerFenced && req.Version < 4 {
		code = codeInvalidProducerEpoch
	}
	resp.ProducerID, resp.ProducerEpoch, resp.ErrorCode = id, ep, code
	return resp
}

// topicConfigs are the topic configs the server understands, with how they
// map to the log's TopicConfig.
var topicConfigNames = []string{"cleanup.policy", "retention.ms", "retention.bytes", "min.insync.replicas", "message.timestamp.type"}

func parseTopicConfigs(cfgs []kmsg.CreateTopicsRequestTopicConfig, tc *mlog.TopicConfig) error {
	for _, cf := range cfgs {
		v := ""
		if cf.Value != nil {
			v = *cf.Value
		}
		switch cf.Name {
		case "retention.ms":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("retention.ms %q: not an integer", v)
			}
			if n < 0 {
				tc.RetentionAge = -1
			} else if n == 0 {
				return errors.New("retention.ms 0 would delete everything at once; use -1 to keep forever")
			} else {
				tc.RetentionAge = time.Duration(n) * time.Millisecond
			}
		case "retention.bytes":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("retention.bytes %q: not an integer", v)
			}
			if n <= 0 {
				n = -1
			}
			tc.RetentionBytes = n
		case "cleanup.policy":
			if v != "delete" {
				return fmt.Errorf("cleanup.policy %q: only \"delete\" is supported (no log compaction)", v)
			}
		case "min.insync.replicas":
			if v != "1" {
				return fmt.Errorf("min.insync.replicas %q: a single node has 1 replica", v)
			}
		case "message.timestamp.type":
			if v != "CreateTime" {
				return fmt.Errorf("message.timestamp.type %q: only CreateTime is supported", v)
			}
		default:
			return fmt.Errorf("topic config %q is not supported (supported: %s)", cf.Name, strings.Join(topicConfigNames, ", "))
		}
	}
	return nil
}

// maxCreatePartitions bounds CreateTopics: every partition of the embedded
// log is a directory, files and a writer goroutine, so a client must not be
// able to ask for millions.
const maxCreatePartitions = 1024

func (c *conn) handleCreateTopics(ctx context.Context, req *kmsg.CreateTopicsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	for _, rt := range req.Topics {
		ot := kmsg.NewCreateTopicsResponseTopic()
		ot.Topic = rt.Topic
		fail := func(code int16, msg string) {
			ot.ErrorCode = code
			ot.ErrorMessage = strPtr(msg)
		}
		var tc mlog.TopicConfig
		switch {
		case !c.allowed(rt.Topic, ActionWrite):
			fail(codeTopicAuth, "not allowed to create "+rt.Topic)
		case len(rt.ReplicaAssignment) > 0:
			fail(codeInvalidRequest, "manual replica assignment is not supported")
		case rt.ReplicationFactor != -1 && rt.ReplicationFactor != 1:
			fail(codeInvalidReplication, fmt.Sprintf("replication factor %d: Millstream is a single node; use 1 or -1", rt.ReplicationFactor))
		case rt.NumPartitions == 0 || rt.NumPartitions < -1 || rt.NumPartitions > maxCreatePartitions:
			fail(codeInvalidPartitions, fmt.Sprintf("%d partitions: use 1 to %d, or -1 for the default", rt.NumPartitions, maxCreatePartitions))
		default:
			if rt.NumPartitions > 0 {
				tc.Partitions = rt.NumPartitions
			}
			if err := parseTopicConfigs(rt.Configs, &tc); err != nil {
				fail(codeInvalidConfig, err.Error())
			} else if err := mlog.ValidateTopicName(rt.Topic); err != nil {
				fail(codeInvalidTopic, err.Error())
			} else if req.ValidateOnly {
				if _, err := c.s.l.Topic(ctx, rt.Topic); err == nil {
					fail(codeTopicExists, "topic "+rt.Topic+" already exists")
				}
			} else if err := c.s.l.CreateTopic(ctx, rt.Topic, tc); err != nil {
				fail(logErrorCode(err), err.Error())
			} else {
				c.s.logger.Info("Kafka client created topic", "topic", rt.Topic, "user", c.user)
			}
		}
		if ot.ErrorCode == 0 {
			ot.TopicID = topicID(rt.Topic)
			ot.ReplicationFactor = 1
			ot.NumPartitions = tc.Partitions
			if info, err := c.s.l.Topic(ctx, rt.Topic); err == nil {
				ot.NumPartitions = int32(len(info.Partitions))
			}
		}
		resp.Topics = append(resp.Topics, ot)
	}
	return resp
}

func (c *conn) handleDescribeConfigs(ctx context.Context, req *kmsg.DescribeConfigsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range req.Resources {
		or := kmsg.NewDescribeConfigsResponseResource()
		or.ResourceType, or.ResourceName = rr.ResourceType, rr.ResourceName
		want := func(name string) bool {
			if rr.ConfigNames == nil {
				return true
			}
			for _, n := range rr.ConfigNames {
				if n == name {
					return true
				}
			}
			return false
		}
		add := func(name, value string, typ kmsg.ConfigType, isDefault bool) {
			if !want(name) {
				return
			}
			cf := kmsg.NewDescribeConfigsResponseResourceConfig()
			cf.Name, cf.Value, cf.ConfigType, cf.IsDefault, cf.ReadOnly = name, strPtr(value), typ, isDefault, true
			cf.Source = kmsg.ConfigSourceDynamicTopicConfig
			if isDefault {
				cf.Source = kmsg.ConfigSourceDefaultConfig
			}
			or.Configs = append(or.Configs, cf)
		}
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			if !c.allowed(rr.ResourceName, ActionRead) && !c.allowed(rr.ResourceName, ActionWrite) {
				or.ErrorCode = codeTopicAuth
				break
			}
			info, err := c.s.l.Topic(ctx, rr.ResourceName)
			if err != nil {
				or.ErrorCode = logErrorCode(err)
				or.ErrorMessage = strPtr(err.Error())
				break
			}
			ms := int64(-1)
			if info.Config.RetentionAge > 0 {
				ms = info.Config.RetentionAge.Milliseconds()
			}
			rb := info.Config.RetentionBytes
			if rb <= 0 {
				rb = -1
			}
			add("cleanup.policy", "delete", kmsg.ConfigTypeList, true)
			add("retention.ms", strconv.FormatInt(ms, 10), kmsg.ConfigTypeLong, false)
			add("retention.bytes", strconv.FormatInt(rb, 10), kmsg.ConfigTypeLong, false)
			add("min.insync.replicas", "1", kmsg.ConfigTypeInt, true)
			add("message.timestamp.type", "CreateTime", kmsg.ConfigTypeString, true)
		case kmsg.ConfigResourceTypeBroker:
			add("broker.id", strconv.Itoa(int(c.s.opts.NodeID)), kmsg.ConfigTypeInt, false)
			add("auto.create.topics.enable", strconv.FormatBool(c.s.opts.AutoCreateTopics), kmsg.ConfigTypeBoolean, false)
			add("default.replication.factor", "1", kmsg.ConfigTypeInt, true)
		default:
			or.ErrorCode = codeInvalidRequest
			or.ErrorMessage = strPtr(fmt.Sprintf("resource type %v is not supported (topics and brokers are)", rr.ResourceType))
		}
		resp.Resources = append(resp.Resources, or)
	}
	return resp
}

func (c *conn) handleDeleteRecords(ctx context.Context, req *kmsg.DeleteRecordsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.DeleteRecordsResponse)
	for _, rt := range req.Topics {
		ot := kmsg.NewDeleteRecordsResponseTopic()
		ot.Topic = rt.Topic
		allowed := c.allowed(rt.Topic, ActionWrite)
		for _, rp := range rt.Partitions {
			op := kmsg.NewDeleteRecordsResponseTopicPartition()
			op.Partition, op.LowWatermark = rp.Partition, -1
			if !allowed {
				op.ErrorCode = codeTopicAuth
				ot.Partitions = append(ot.Partitions, op)
				continue
			}
			info, err := c.s.l.Topic(ctx, rt.Topic)
			switch {
			case err != nil:
				op.ErrorCode = logErrorCode(err)
			case rp.Partition < 0 || int(rp.Partition) >= len(info.Partitions):
				op.ErrorCode = codeUnknownTopic
			default:
				off := rp.Offset
				if off == -1 {
					off = info.Partitions[rp.Partition].End
				}
				if err := c.s.l.DeleteRecordsBefore(ctx, rt.Topic, rp.Partition, off); err != nil {
					op.ErrorCode = logErrorCode(err)
					break
				}
				c.s.logger.Info("Kafka client deleted records", "topic", rt.Topic, "partition", rp.Partition, "before", off, "user", c.user)
				if info, err := c.s.l.Topic(ctx, rt.Topic); err == nil {
					op.LowWatermark = info.Partitions[rp.Partition].Start
				}
			}
			ot.Partitions = append(ot.Partitions, op)
		}
		resp.Topics = append(resp.Topics, ot)
	}
	return resp
}
