package uns

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/millstream/millstream/log"
)

// The normaliser and the command handler write records to an output topic
// before they commit the input offsets those records came from. Each output
// record carries its source position in a header, and after each commit the
// writer "bookmarks" the output topic: it commits, under its own group, the
// output's end offsets. At start, the records after the bookmark are those
// of a batch that was written but whose input was not committed; their
// source positions say what not to write again.

// commitBookmark commits the current end offsets of topic under group.
func commitBookmark(ctx context.Context, l log.Log, group, topic string) error {
	offs, err := bookmarkOffsets(ctx, l, topic)
	if err == nil {
		err = log.CommitOffsets(ctx, l, group, offs)
	}
	if err != nil {
		return fmt.Errorf("bookmark %s: %w", topic, err)
	}
	return nil
}

// bookmarkOffsets returns the current end offset of every partition of
// topic: the bookmark to commit.
func bookmarkOffsets(ctx context.Context, l log.Log, topic string) ([]log.TopicPartitionOffset, error) {
	info, err := l.Topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	offs := make([]log.TopicPartitionOffset, len(info.Partitions))
	for i, p := range info.Partitions {
		offs[i] = log.TopicPartitionOffset{Topic: topic, Partition: p.Partition, Offset: p.End}
	}
	return offs, nil
}

// sourcesAfterBookmark returns the values of header on the records of topic
// after group's bookmark.
func sourcesAfterBookmark(ctx context.Context, l log.Log, group, topic, header string) (map[string]bool, error) {
	info, err := l.Topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	from := map[int32]int64{}
	for _, p := range info.Partitions {
		off, ok, err := l.CommittedOffset(ctx, group, topic, p.Partition)
		if err != nil {
			return nil, err
		}
		if !ok {
			off = p.Start
		}
		from[p.Partition] = off
	}
	return log.HeaderValues(ctx, l, topic, header, from, nil)
}

// parseSource reads "<partition>:<offset>:..." (HeaderSource).
func parseSource(b []byte) (int32, int64, bool) {
	s := string(b)
	i := strings.IndexByte(s, ':')
	if i < 0 {
		return 0, 0, false
	}
	j := strings.IndexByte(s[i+1:], ':')
	if j < 0 {
		j = len(s) - i - 1
	}
	p, err1 := strconv.ParseInt(s[:i], 10, 32)
	o, err2 := strconv.ParseInt(s[i+1:i+1+j], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return int32(p), o, true
}
