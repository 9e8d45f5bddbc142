// Package kafkaproto is a Kafka wire-protocol endpoint over Millstream's log
// (log.Log, normally the embedded log): Kafka clients - franz-go, librdkafka
// and kcat, the Java client, Kafka Connect in standalone mode - produce to
// and consume from Millstream's topics as from a one-broker Kafka cluster.
// Requests are decoded and encoded with franz-go's kmsg.
//
// # Implemented
//
//   - ApiVersions v0-3 (advertising exactly what is implemented; a newer
//     ApiVersions gets the KIP-511 v0 answer), Metadata v0-12 (one broker,
//     leader of every partition; stable topic ids derived from the name),
//     CreateTopics v0-7, DescribeConfigs v0-4, DeleteRecords v0-2.
//   - Produce v3-9 with acks 0, 1 and -1. The response is sent only when the
//     records are durable under the log's fsync policy, for acks 1 and -1
//     alike. Record batches v2 are CRC32C-checked and decompressed (gzip,
//     snappy raw and xerial-framed, lz4, zstd). A batch's records are
//     appended contiguously (a per-partition lock), so the reported base
//     offset is exact unless other Millstream writers append to the same
//     partition concurrently. Idempotent producers: InitProducerID v0-4
//     (with the KIP-360 epoch bump), per-partition sequence checks,
//     duplicates of the last 5 batches answered with their original offset,
//     gaps answered with OUT_OF_ORDER_SEQUENCE_NUMBER.
//   - Fetch v4-12 without fetch sessions (clients fall back to full
//     fetches): long polls on the log's blocking Fetch until MinBytes or
//     MaxWaitMillis (at most 30 s), per-partition and overall byte limits
//     (at least one record is always returned), uncompressed v2 batches, one
//     per contiguous offset run, with keys, headers and timestamps.
//   - ListOffsets v1-6: earliest, latest, and by timestamp (OffsetForTime).
//   - Consumer groups (classic protocol): FindCoordinator v0-3, JoinGroup
//     v0-9 (KIP-394 member ids), SyncGroup v0-5, Heartbeat v0-4, LeaveGroup
//     v0-5, generations, session and rebalance timeouts, protocol selection
//     by vote; the leader's assignment (range, roundrobin, sticky,
//     cooperative-sticky) is relayed as is. ListGroups v0-4, DescribeGroups
//     v0-5.
//   - OffsetCommit v0-8 and OffsetFetch v1-7, stored with log.CommitOffset
//     under Options.GroupPrefix + group, so Millstream's lag metrics see
//     Kafka consumers.
//   - SASL PLAIN (SaslHandshake v1, SaslAuthenticate v0-2) checked by
//     Options.Authenticator; per-topic read/write by Options.Authorizer;
//     anonymous access when configured; SASL SCRAM-SHA-256/512 against
//     credentials derived at enrolment (Options.SCRAM, scram.go). TLS via
//     Options.TLSConfig.
//   - Prometheus metrics (Server.Register): requests by API and error code,
//     bytes in and out, connections, auth failures, records in and out.
//
// # Not implemented
//
// Transactions (transactional producers get
// TRANSACTIONAL_ID_AUTHORIZATION_FAILED; read_committed reads everything,
// as there are no aborted records), the KIP-848 consumer group protocol
// (clients use the classic one), static membership semantics (instance ids
// are accepted and reported but a restart is a normal rejoin), fetch
// sessions, log compaction (cleanup.policy=compact is refused), topic ids in
// Produce/Fetch, message formats v0/v1, unframed SASL after SaslHandshake
// v0 (SCRAM and PLAIN work through SaslAuthenticate), ACL and quota APIs,
// DeleteTopics and partition changes, replication (it is one node), offset
// commit metadata strings and leader epochs. Requests for unimplemented
// APIs or versions are answered with UNSUPPORTED_VERSION where the response
// has a top-level error code; an API key unknown to kmsg gets a bare error
// code; the connection stays open in both cases. Malformed requests close
// the connection with a logged reason, as Kafka does.
//
// Group membership and idempotent producer state are in memory: after a
// restart, consumers rejoin and producers re-initialise on their own.
package kafkaproto
