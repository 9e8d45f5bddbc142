package kafkaproto

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	mlog "github.com/millstream/millstream/log"
)

var (
	codeUnknownTopic          = kerr.UnknownTopicOrPartition.Code
	codeTopicAuth             = kerr.TopicAuthorizationFailed.Code
	codeCorrupt               = kerr.CorruptMessage.Code
	codeTooLarge              = kerr.MessageTooLarge.Code
	codeOutOfRange            = kerr.OffsetOutOfRange.Code
	codeUnknownProducerID     = kerr.UnknownProducerID.Code
	codeInvalidProducerEpoch  = kerr.InvalidProducerEpoch.Code
	codeProducerFenced        = kerr.ProducerFenced.Code
	codeOutOfOrderSequence    = kerr.OutOfOrderSequenceNumber.Code
	codeNotEnoughReplicas     = kerr.NotEnoughReplicas.Code
	codeInvalidRequest        = kerr.InvalidRequest.Code
	codeUnsupportedForFormat  = kerr.UnsupportedForMessageFormat.Code
	codeNotLeader             = kerr.NotLeaderForPartition.Code
	codeRequestTimedOut       = kerr.RequestTimedOut.Code
	codeStorageError          = kerr.KafkaStorageError.Code
	codeInvalidTopic          = kerr.InvalidTopicException.Code
	codeTopicExists           = kerr.TopicAlreadyExists.Code
	codeInvalidPartitions     = kerr.InvalidPartitions.Code
	codeInvalidReplication    = kerr.InvalidReplicationFactor.Code
	codeInvalidConfig         = kerr.InvalidConfig.Code
	codeCoordinatorNotAvail   = kerr.CoordinatorNotAvailable.Code
	codeTxnIDAuth             = kerr.TransactionalIDAuthorizationFailed.Code
	codeUnsupportedSASL       = kerr.UnsupportedSaslMechanism.Code
	codeSASLAuthFailed        = kerr.SaslAuthenticationFailed.Code
	codeIllegalSASLState      = kerr.IllegalSaslState.Code
	codeInvalidGroupID        = kerr.InvalidGroupID.Code
	codeUnknownMember         = kerr.UnknownMemberID.Code
	codeIllegalGeneration     = kerr.IllegalGeneration.Code
	codeRebalanceInProgress   = kerr.RebalanceInProgress.Code
	codeInconsistentProtocol  = kerr.InconsistentGroupProtocol.Code
	codeMemberIDRequired      = kerr.MemberIDRequired.Code
	codeInvalidSessionTimeout = kerr.InvalidSessionTimeout.Code
)

// logErrorCode maps a log error to the Kafka error code a client acts on
// best: retriable codes for conditions that pass (shutdown, timeouts),
// specific codes where the client should give up.
func logErrorCode(err error) int16 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, mlog.ErrUnknownTopic), errors.Is(err, mlog.ErrUnknownPartition):
		return codeUnknownTopic
	case errors.Is(err, mlog.ErrOffsetOutOfRange):
		return codeOutOfRange
	case errors.Is(err, mlog.ErrRecordTooLarge):
		return codeTooLarge
	case errors.Is(err, mlog.ErrInvalidTopicName):
		return codeInvalidTopic
	case errors.Is(err, mlog.ErrTopicExists):
		return codeTopicExists
	case errors.Is(err, mlog.ErrInvalidPartitions):
		return codeInvalidPartitions
	case errors.Is(err, mlog.ErrClosed):
		// The server is shutting down: NOT_LEADER makes clients refresh
		// metadata and retry, against this node after a restart.
		return codeNotLeader
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return codeRequestTimedOut
	default:
		return codeStorageError
	}
}
