// Package kafka implements log.Log on an Apache Kafka cluster (or any engine
// that speaks the Kafka protocol) with franz-go. It is what `log.backend:
// kafka` selects: components written against log.Log run unchanged, and
// several Millstream nodes can share one cluster.
//
// # Mapping
//
//	log.Log                 Kafka
//	topic, partition        topic, partition (created with CreateTopics)
//	TopicConfig retention   retention.ms / retention.bytes (-1 = unlimited; 0 = broker default)
//	Produce / ProduceSync   idempotent producer, acks=all
//	Fetch                   FetchRequest to the partition's leader
//	OffsetForTime           ListOffsets by timestamp
//	CommitOffset            OffsetCommit as a non-member (generation -1)
//	CommittedOffset, Groups OffsetFetch, ListGroups
//	DeleteRecordsBefore     DeleteRecords
//	Topic(s) Start / End    ListOffsets earliest / latest (Bytes, Segments are 0)
//
// # Durability and order
//
// The producer is idempotent and uses acks=all: a promise reports success
// only when every in-sync replica has the record, so "acknowledged means
// durable" holds as far as the topic's replication.factor and the cluster's
// min.insync.replicas make it (use 3 and 2 in production). Retries never
// duplicate or reorder, so records produced by one goroutine to one
// partition keep their order. Produce blocks while MaxBufferedRecords or
// MaxBufferedBytes are unacknowledged (backpressure); a context that ends
// while blocked fails that record with the context's error. Once buffered, a
// record is delivered or fails on its own (it is not tied to the context),
// and Close fails what Kafka did not acknowledge within CloseTimeout with
// ErrClosed: never a silent drop.
//
// # Partitioning
//
// A record's partition is log.PartitionForKey(key, partitions): murmur2 as
// in Kafka's Java client and franz-go's default key partitioner, so a key
// lands on the same partition here, on the embedded log and from any other
// Kafka client. The one difference is the empty key: it always goes to
// partition 0 (Kafka's clients spread unkeyed records), keeping unkeyed
// records in one order. A record with PartitionSet goes where it says; a
// partition the topic does not have fails with ErrUnknownPartition. The
// partitioner is consistent: a key waits for its partition's leader rather
// than moving elsewhere.
//
// # Fetching
//
// Fetch reads one partition directly, without a consumer group, through a
// FetchRequest to the partition's leader: offsets below the start or beyond
// the end are ErrOffsetOutOfRange, MaxRecords and MaxBytes are applied to
// the batches Kafka returns. A Fetch with Wait that finds nothing joins a
// long poll shared by every waiting Fetch on the same broker (Kafka serves
// one request per connection at a time, so a long poll per Fetch would
// queue them behind each other); Options.FetchWait bounds each poll, and so
// how late a newly waiting Fetch joins. When leadership moves, Fetch
// refreshes its metadata and follows. log.Consumer works on this backend as
// on the embedded one: it is the way to read all partitions of a topic with
// one named consumer on one node.
//
// # Consumer groups and scaling out
//
// (*Log).GroupConsumer is the way to share a topic's partitions among
// several Millstream nodes: every node creates a GroupConsumer with the same
// group name; Kafka's group protocol (cooperative-sticky balancing) splits
// the partitions among the live members and moves the partitions of a
// member that leaves, or whose session times out, to the others. A
// component uses it like this:
//
//	gc, err := kl.GroupConsumer(ctx, "historian", []string{"uns.points"}, kafka.GroupOptions{
//		OnAssigned: func(ctx context.Context, parts map[string][]int32) { /* load state of parts */ },
//		OnRevoked:  func(ctx context.Context, parts map[string][]int32) { /* save state of parts */ },
//		OnLost:     func(ctx context.Context, parts map[string][]int32) { /* drop state of parts */ },
//	})
//	for {
//		recs, err := gc.Poll(ctx) // marks the previous batch processed
//		if ctx.Err() != nil { break }
//		if err != nil { /* report; Poll again */ continue }
//		process(recs)
//		gc.Commit(ctx) // every batch, or every so often
//	}
//	gc.Close() // commits processed positions, hands partitions over
//
// Rebalances wait while a batch is being processed (from Poll returning it
// to the next Poll or Close), so OnRevoked always sees every record Poll
// returned for its partitions processed; after it returns, their positions
// are committed, and only then does the next owner start, right after them.
// Delivery is at-least-once: what a member processed but had not committed
// when it died (crash, lost session: OnLost) is processed again by the next
// owner. A component gets effectively exactly-once by saving its state
// together with the positions it covers (GroupConsumer.Positions, or the
// offsets of the records) and skipping records below its saved position
// after OnAssigned loads it.
//
// CommitOffset is an admin commit; Kafka refuses it for a group that has
// live GroupConsumer members. Do not mix the two on one group name.
//
// # Not supported
//
// Transactions (exactly-once across topics), compacted topics as such (a
// compacted topic works, but Fetch then returns offsets with gaps), topic
// deletion and partition changes through log.Log (use Kafka's tools;
// adding partitions moves keys to other partitions, which breaks per-key
// order across the change), and per-partition Bytes and Segments in
// TopicInfo. Metrics cover production (Register); partition offsets and
// consumer lag are best taken from Kafka's own exporters.
package kafka
