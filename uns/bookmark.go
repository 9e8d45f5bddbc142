package uns

import (
	"context"
	"fmt"

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
	info, err := l.Topic(ctx, topic)
	if err != nil {
		return fmt.Errorf("bookmark %s: %w", topic, err)
	}
	for _, p := range info.Partitions {
		if err := l.CommitOffset(ctx, group, topic, p.Partition, p.End); err != nil {
			return fmt.Errorf("bookmark %s: %w", topic, err)
		}
	}
	return nil
}

// sourcesAfterBookmark returns the values of header on the records of topic
// after group's bookmark.
func sourcesAfterBookmark(ctx context.Context, l log.Log, group, topic, header string) (map[string]bool, error) {
	info, err := l.Topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	done := map[string]bool{}
	for _, p := range info.Partitions {
		off, ok, err := l.CommittedOffset(ctx, group, topic, p.Partition)
		if err != nil {
			return nil, err
		}
		if !ok {
			off = p.Start
		}
		for off < p.End {
			recs, err := l.Fetch(ctx, topic, p.Partition, max(off, p.Start), log.FetchOptions{})
			if err != nil {
				return nil, fmt.Errorf("read %s/%d: %w", topic, p.Partition, err)
			}
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				if v, ok := r.HeaderValue(header); ok {
					done[string(v)] = true
				}
				off = r.Offset + 1
			}
		}
	}
	return done, nil
}
