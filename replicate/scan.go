package replicate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

var kerrTopicExists = kerr.TopicAlreadyExists

// parseSource reads a millstream.src header value.
func parseSource(v []byte) (site, topic string, partition int32, offset int64, ok bool) {
	f := strings.Split(string(v), "/")
	if len(f) != 4 {
		return "", "", 0, 0, false
	}
	p, err1 := strconv.ParseInt(f[2], 10, 32)
	o, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		return "", "", 0, 0, false
	}
	return f[0], f[1], int32(p), o, true
}

// resumeScan finds the records of this flow that the remote already holds
// beyond the local checkpoint: those a previous session sent and the remote
// acknowledged (or stored without the acknowledgement arriving) before the
// checkpoint caught up with them. The idempotent producer cannot dedup them:
// its sequence numbers belong to a producer id that died with the previous
// session. The scan reads each remote partition from the scan start the
// flow committed on the remote (its consumer group there) to the current
// end, and collects, per source partition, the exact set of source offsets
// at or after the checkpoint that carry this site's millstream.src header.
// The readers then skip exactly those. It returns the remote end offsets.
func (s *session) resumeScan(ctx context.Context, remoteTopics map[string]bool, starts map[srcPart]int64, fresh map[srcPart]bool) (map[dstPart]int64, error) {
	topics := make([]string, 0, len(remoteTopics))
	for t := range remoteTopics {
		topics = append(topics, t)
	}
	var listed kadm.ListedOffsets
	var err error
	for try := 0; ; try++ {
		listed, err = s.adm.ListEndOffsets(ctx, topics...)
		if err == nil {
			err = listed.Error()
		}
		// A topic just created may take a moment to have a leader.
		if err == nil || try == 20 || !errors.Is(err, kerr.UnknownTopicOrPartition) && !errors.Is(err, kerr.LeaderNotAvailable) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		return nil, fmt.Errorf("remote end offsets: %w", err)
	}
	ends := map[dstPart]int64{}
	listed.Each(func(o kadm.ListedOffset) { ends[dstPart{o.Topic, o.Partition}] = o.Offset })
	s.found = map[srcPart]map[int64]location{}
	for sp := range starts {
		s.found[sp] = map[int64]location{}
	}
	if len(fresh) == len(starts) {
		return ends, nil // never sent anything: nothing to find
	}

	committed, err := s.adm.FetchOffsets(ctx, s.f.remoteGroup)
	if err != nil {
		return nil, fmt.Errorf("remote scan start (group %s): %w", s.f.remoteGroup, err)
	}
	firsts, err := s.adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = firsts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("remote start offsets: %w", err)
	}
	from := map[string]map[int32]kgo.Offset{}
	left := map[dstPart]int64{} // partition -> last offset to read
	for dp, end := range ends {
		start := int64(0)
		if o, ok := firsts.Lookup(dp.topic, dp.partition); ok {
			start = o.Offset
		}
		if o, ok := committed.Lookup(dp.topic, dp.partition); ok && o.Err == nil && o.At > start {
			start = o.At
		}
		if start >= end {
			continue
		}
		if from[dp.topic] == nil {
			from[dp.topic] = map[int32]kgo.Offset{}
		}
		from[dp.topic][dp.partition] = kgo.NewOffset().At(start)
		left[dp] = end - 1
	}
	if len(left) == 0 {
		return ends, nil
	}
	cl, err := s.f.r.newClient("scan-"+s.f.cfg.Name, kgo.ConsumePartitions(from), kgo.FetchMaxBytes(16<<20))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	site := s.f.r.opts.Site
	scanned := 0
	idle := 0
	for len(left) > 0 {
		pctx, cancel := context.WithTimeout(ctx, scanIdle)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fs.NumRecords() == 0 && s.f.r.Status().WANUp {
			// The last offsets of a partition can be transaction markers
			// (another producer of the topic uses transactions), which a
			// fetch never returns: once the link is up and nothing more
			// comes for a while, the partition has been read.
			if idle++; idle >= 3 {
				break
			}
			continue
		}
		idle = 0
		fs = filterCanceled(fs)
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			ferr = fmt.Errorf("resume scan %s/%d: %w", t, p, err)
		})
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			dp := dstPart{r.Topic, r.Partition}
			last, ok := left[dp]
			if !ok || r.Offset > last {
				return
			}
			scanned++
			if r.Offset == last {
				delete(left, dp)
			}
			for _, h := range r.Headers {
				if h.Key != HeaderSource {
					continue
				}
				hs, topic, p, o, ok := parseSource(h.Value)
				sp := srcPart{topic, p}
				start, mine := starts[sp]
				if !ok || hs != site || !mine || s.f.cfg.remoteTopic(topic) != r.Topic {
					break
				}
				if o >= start {
					if _, dup := s.found[sp][o]; !dup {
						s.found[sp][o] = location{dp, r.Offset}
						s.foundLeft.Add(1)
					}
				}
				break
			}
		})
	}
	s.f.log.Info("resume scan done", "remote_records_read", scanned, "already_on_remote", s.foundLeft.Load())
	return ends, nil
}

// scanIdle is how long one poll of the resume scan waits for records.
const scanIdle = time.Second

// filterCanceled drops the context errors of a poll that timed out.
func filterCanceled(fs kgo.Fetches) kgo.Fetches {
	out := fs[:0]
	for _, f := range fs {
		keep := true
		for _, t := range f.Topics {
			for _, p := range t.Partitions {
				if p.Err != nil && (errors.Is(p.Err, context.DeadlineExceeded) || errors.Is(p.Err, context.Canceled)) {
					keep = false
				}
			}
		}
		if keep {
			out = append(out, f)
		}
	}
	return out
}
