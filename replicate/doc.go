// Package replicate moves selected streams from the plant's log to a remote
// (cloud) Kafka cluster through unreliable WANs, without losing or
// duplicating anything, and brings commands from the cloud to the plant.
//
// # Flows
//
// A flow reads local topics (named consumer group "replicate.<flow>" holds
// its checkpoint), selects records by UNS pattern (the point path of
// uns.points records, the key of other topics), keeps on site whatever a
// deny rule matches (checked last, always wins), and produces the rest to
// the remote topic with a franz-go idempotent producer (acks=all), batch
// compression and an optional bandwidth cap. Key, value, headers and
// timestamp are kept; the remote partition is murmur2 of the key, as on the
// local log, so per-key order holds end to end. Every remote record carries
// the header millstream.src = "<site>/<topic>/<partition>/<offset>" of its
// source record. All connections are outbound.
//
// # Store and forward
//
// The local log is the buffer. While the WAN is down nothing is read beyond
// what the producer can buffer, the producer retries forever (a WAN outage
// never fails a record), and the backlog stays in the local log, where
// retention is the only limit: the backlog_retention_ratio metric and a
// warning say when unreplicated data gets close to being deleted. When the
// link is back the flow catches up from where it was, as fast as the link
// (or the bandwidth cap) allows.
//
// # Exactly once across restarts
//
// Within one session (one producer client) the idempotent producer
// deduplicates retries and keeps order. Its protection ends with the
// process: after a restart the producer id is new, and records the remote
// stored but whose acknowledgement never arrived (or arrived after the
// last checkpoint) would be sent again. So:
//
//  1. The local checkpoint (CommitOffset under "replicate.<flow>") only
//     covers records the remote acknowledged, contiguously per source
//     partition; it is committed every CommitInterval and at stop.
//  2. Right after it, the flow commits on the remote cluster, as offsets of
//     the consumer group "millstream.replicate.<site>.<flow>" on the remote
//     topic, where a later scan must start: the lowest remote offset that
//     can hold one of its records at or beyond that checkpoint (the lowest
//     acknowledged-but-not-yet-checkpointed record, or the offset after
//     the last record known to have landed). Committed in this order, the
//     remote scan start is never ahead of the local checkpoint it belongs
//     to.
//  3. A session starts with a resume scan: it reads every remote partition
//     from that scan start to its end and collects, per source partition,
//     the exact set of source offsets at or beyond the checkpoint that carry
//     this site's millstream.src. Readers skip exactly those (counted in
//     millstream_replicate_resume_skipped_records_total) and send the rest.
//
// The set is exact, not a high-water mark, because records of one source
// partition spread over several remote partitions: one may have landed
// while an older one to another partition did not. The scan is short: it
// covers what was in flight at the stop plus what other producers wrote to
// the remote topic since the last commit. A flow's first start commits the
// remote ends and an initial checkpoint before sending anything, so a flow
// without a checkpoint never scans.
//
// Limits: the site name and the local offsets identify records, so a site
// whose local log is wiped must get a new site name (or its remote group
// deleted). A record the remote refuses for good (too large, not
// authorised) stops its flow, which retries and logs why, rather than skip
// it.
//
// # Cloud-to-edge commands
//
// With Commands enabled, a consumer group on the remote cluster reads the
// remote commands topic (JSON uns.CommandRequest) over its own outbound
// connection. Commands for this site's paths are appended to the local
// commands topic (key = path, header replicate.origin) where the local
// Commander audits and executes them under its own allow list and maximum
// age; the remote offset is committed only once the local append is
// durable, and request ids already routed are skipped, so a command is
// routed once. The audit records of those requests (the Commander's
// commands.audit topic) are published to the remote results topic.
package replicate
