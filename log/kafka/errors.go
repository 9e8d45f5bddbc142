package kafka

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	mlog "github.com/millstream/millstream/log"
)

// kindErr carries both the shared log error (its kind) and the Kafka error
// it came from, so callers can test either with errors.Is.
type kindErr struct {
	kind  error
	cause error
}

func (e *kindErr) Error() string   { return e.kind.Error() + ": " + e.cause.Error() }
func (e *kindErr) Unwrap() []error { return []error{e.kind, e.cause} }

// kindOf maps a Kafka or client error to the shared log error it means, or
// nil when there is none.
func kindOf(err error) error {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		switch ke {
		case kerr.UnknownTopicOrPartition, kerr.UnknownTopicID:
			return mlog.ErrUnknownTopic
		case kerr.TopicAlreadyExists:
			return mlog.ErrTopicExists
		case kerr.OffsetOutOfRange:
			return mlog.ErrOffsetOutOfRange
		case kerr.MessageTooLarge, kerr.RecordListTooLarge:
			return mlog.ErrRecordTooLarge
		case kerr.InvalidTopicException:
			return mlog.ErrInvalidTopicName
		case kerr.InvalidPartitions:
			return mlog.ErrInvalidPartitions
		}
	}
	if errors.Is(err, kgo.ErrClientClosed) {
		return mlog.ErrClosed
	}
	return nil
}

// mapErr returns err so that errors.Is also matches the shared log error it
// stands for. err may be nil.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var k *kindErr
	if errors.As(err, &k) {
		return err
	}
	if kind := kindOf(err); kind != nil {
		return &kindErr{kind: kind, cause: err}
	}
	return err
}

// retriable reports whether a partition-level error is cured by refreshing
// metadata and trying again (leadership moved, a broker restarted).
func retriable(err error) bool {
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke {
	case kerr.NotLeaderForPartition, kerr.LeaderNotAvailable, kerr.FencedLeaderEpoch,
		kerr.UnknownLeaderEpoch, kerr.UnknownTopicOrPartition, kerr.UnknownTopicID,
		kerr.ReplicaNotAvailable, kerr.KafkaStorageError, kerr.NotCoordinator,
		kerr.CoordinatorNotAvailable, kerr.CoordinatorLoadInProgress, kerr.RequestTimedOut,
		kerr.InconsistentTopicID, kerr.OffsetNotAvailable:
		return true
	}
	return ke.Retriable
}
