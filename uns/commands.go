package uns

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/millstream/millstream/log"
	"github.com/millstream/millstream/sparkplug"
)

// Commands to devices flow through the log like everything else: a request
// is a record of CommandsTopic (from the HTTP API, a twin, or the cloud via
// replication), the Commander turns it into a Sparkplug NCMD/DCMD typed with
// the metric's birth datatype, and every request, sent or refused, leaves one
// record on AuditTopic that says who asked for what, when, and what happened.
const (
	CommandsTopic = "commands"
	AuditTopic    = "commands.audit"
	// CommanderGroup is the consumer group of the Commander.
	CommanderGroup = "commands"
	// headerCommandSource on an audit record is "<partition>:<offset>" of the
	// command it answers; a restart uses it never to send a command twice.
	headerCommandSource = "commands.src"
)

// Command statuses on audit records.
const (
	CommandSent     = "sent"     // published to the device
	CommandRejected = "rejected" // refused: not allowed, unknown target, bad value, offline
	CommandExpired  = "expired"  // older than the maximum age when it was read
)

// CommandRequest is the value of a CommandsTopic record (JSON).
type CommandRequest struct {
	// ID identifies the request in its audit record; NewCommandRequest fills
	// in a random one.
	ID string `json:"id"`
	// Path is the namespace path of the metric to write
	// ("group/edge_node[/device]/metric" for Sparkplug).
	Path string `json:"path"`
	// Value is the JSON value to write: number, boolean or string.
	Value json.RawMessage `json:"value"`
	// RequestedBy says who asked (a user, "cloud", a twin); for the audit.
	RequestedBy string `json:"requested_by,omitempty"`
}

// AuditRecord is the value of an AuditTopic record (JSON).
type AuditRecord struct {
	ID          string          `json:"id"`
	Path        string          `json:"path"`
	Value       json.RawMessage `json:"value"`
	RequestedBy string          `json:"requested_by,omitempty"`
	RequestedAt time.Time       `json:"requested_at"`
	HandledAt   time.Time       `json:"handled_at"`
	Status      string          `json:"status"`
	Reason      string          `json:"reason,omitempty"`
	// Topic, Metric and Datatype describe what was sent.
	Topic    string `json:"mqtt_topic,omitempty"`
	Metric   string `json:"metric,omitempty"`
	Datatype string `json:"datatype,omitempty"`
	// Command is "<topic>/<partition>/<offset>" of the request record.
	Command string `json:"command"`
}

// NewCommandRequest checks a request and gives it an id if it has none.
func NewCommandRequest(id, path string, value json.RawMessage, by string) (CommandRequest, error) {
	if err := ValidatePath(path); err != nil {
		return CommandRequest{}, err
	}
	if _, err := commandValue(value); err != nil {
		return CommandRequest{}, err
	}
	if id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	if len(id) > 128 {
		return CommandRequest{}, fmt.Errorf("command id is %d bytes; at most 128", len(id))
	}
	return CommandRequest{ID: id, Path: path, Value: value, RequestedBy: by}, nil
}

// commandValue reads a request's JSON value as a Sparkplug value: integers
// stay integers so that a 64-bit counter preset loses nothing.
func commandValue(raw json.RawMessage) (sparkplug.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return sparkplug.Value{}, fmt.Errorf("command value: %v", err)
	}
	switch x := v.(type) {
	case bool:
		return sparkplug.BoolValue(x), nil
	case string:
		return sparkplug.StringValue(x), nil
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return sparkplug.IntValue(i), nil
		}
		if u, err := strconv.ParseUint(string(x), 10, 64); err == nil {
			return sparkplug.UintValue(u), nil
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return sparkplug.Value{}, fmt.Errorf("command value %s is not a number", x)
		}
		return sparkplug.FloatValue(f), nil
	case nil:
		return sparkplug.Value{}, errors.New("command value is missing or null: give a number, boolean or string")
	}
	return sparkplug.Value{}, fmt.Errorf("command value must be a number, boolean or string, not %s", raw)
}

// CommanderOptions configures a Commander.
type CommanderOptions struct {
	// Allow are the namespace patterns (+ and # wildcards) that commands may
	// write to. Empty means no command is allowed: writes to machines are off
	// unless explicitly enabled per target.
	Allow []string
	// MaxAge refuses (status expired) requests older than this when read,
	// so that a backlog built up while Millstream was down does not move a
	// machine to a setpoint someone asked for long ago. Default 1 minute.
	MaxAge time.Duration
	// Publish sends the MQTT message (QoS 0, not retained, as Sparkplug
	// commands are).
	Publish func(topic string, payload []byte, retain bool, qos byte) error
	Logger  *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// GroupConsumer, when set (a Kafka cluster shared by several nodes),
	// makes the Commander a member of consumer group CommanderGroup: each
	// command partition is handled by one node, so no command is sent
	// twice. A node can type a command only for edge nodes it hosts (whose
	// ingress partition it owns); others are refused with that reason.
	GroupConsumer GroupConsumerFactory
}

// commandConsumer is what Run needs of log.Consumer or a group member.
type commandConsumer interface {
	Poll(ctx context.Context) ([]log.Record, error)
	Commit(ctx context.Context) error
	Close() error
}

// commanderBookmarkGroup bookmarks the audit topic when the Commander is a
// group member: Kafka refuses commits to a group with live members from
// outside it.
const commanderBookmarkGroup = CommanderGroup + ".bookmark"

// Commander consumes CommandsTopic and sends each request to the Sparkplug
// edge node or device that owns the metric, resolved and typed through the
// normaliser's host application state.
//
// Delivery is at most once, the safe side for writes to machines: the audit
// record is durable before the command is published, and a restart skips
// every request that has an audit record. A crash between the two loses
// that command (its audit record says sent); it never sends one twice.
type Commander struct {
	l     log.Log
	norm  *Normalizer
	opts  CommanderOptions
	allow [][]string
	log   *slog.Logger

	counts [3]atomic.Uint64 // sent, rejected, expired

	mu      sync.Mutex
	results map[string]AuditRecord // recent results by id, for Await
	order   []string
	changed chan struct{} // closed and replaced whenever results change
}

// recentResults bounds the results kept for Await.
const recentResults = 4096

// NewCommander builds a Commander; Run starts it.
func NewCommander(l log.Log, norm *Normalizer, opts CommanderOptions) (*Commander, error) {
	if opts.MaxAge <= 0 {
		opts.MaxAge = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Commander{l: l, norm: norm, opts: opts, log: opts.Logger, results: map[string]AuditRecord{}, changed: make(chan struct{})}
	for _, p := range opts.Allow {
		if err := ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("commands allow list: %w", err)
		}
		c.allow = append(c.allow, strings.Split(p, "/"))
	}
	return c, nil
}

// CommandRef names a request record: "<topic>/<partition>/<offset>", as
// AuditRecord.Command does.
func CommandRef(r *log.Record) string {
	return r.Topic + "/" + strconv.Itoa(int(r.Partition)) + "/" + strconv.FormatInt(r.Offset, 10)
}

// Submit appends a request to CommandsTopic and returns once it is durable.
func (c *Commander) Submit(ctx context.Context, req CommandRequest) (*log.Record, error) {
	v, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	r := &log.Record{Topic: CommandsTopic, Key: []byte(req.Path), Value: v, Timestamp: c.opts.Now(),
		Headers: []log.Header{{Key: HeaderContentType, Value: contentTypeJSON}}}
	err = c.l.ProduceSync(ctx, r)
	if errors.Is(err, log.ErrUnknownTopic) { // before Run's first start
		if err = c.l.CreateTopic(ctx, CommandsTopic, log.TopicConfig{Partitions: 1}); err == nil || errors.Is(err, log.ErrTopicExists) {
			err = c.l.ProduceSync(ctx, r)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	return r, nil
}

// Await returns the audit record of request id once the Commander has
// handled it, or false when ctx ends first. Only requests handled by this
// process since it started are known. With ref (CommandRef of the request
// record Submit returned) it waits for the outcome of that very request: a
// request resubmitted with the same id, say after it was refused because
// its edge node was not yet born, must not be answered with the earlier
// refusal, or the client retries again and the command is sent twice.
func (c *Commander) Await(ctx context.Context, id, ref string) (AuditRecord, bool) {
	for {
		c.mu.Lock()
		a, ok := c.results[id]
		ch := c.changed
		c.mu.Unlock()
		if ok && (ref == "" || a.Command == ref) {
			return a, true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return AuditRecord{}, false
		}
	}
}

func (c *Commander) remember(a AuditRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.results[a.ID]; !ok {
		c.order = append(c.order, a.ID)
	}
	c.results[a.ID] = a
	for len(c.order) > recentResults {
		delete(c.results, c.order[0])
		c.order = c.order[1:]
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// Run consumes until ctx is done (then it returns nil) or the log fails.
func (c *Commander) Run(ctx context.Context) error {
	// One partition for requests: they are few, one handler (one node, on
	// a shared Kafka cluster) takes them all, in the order they came.
	for t, parts := range map[string]int32{CommandsTopic: 1, AuditTopic: 0} {
		if err := c.l.CreateTopic(ctx, t, log.TopicConfig{Partitions: parts}); err != nil && !errors.Is(err, log.ErrTopicExists) {
			return fmt.Errorf("commands: create %s: %w", t, err)
		}
	}
	bookmarkGroup := CommanderGroup
	var cons commandConsumer
	var reassigned atomic.Bool // a rebalance gave this member partitions
	if c.opts.GroupConsumer != nil {
		bookmarkGroup = commanderBookmarkGroup
		gc, err := c.opts.GroupConsumer(ctx, CommanderGroup, []string{CommandsTopic}, GroupCallbacks{
			OnAssigned: func(context.Context, map[string][]int32) { reassigned.Store(true) },
		})
		if err != nil {
			return fmt.Errorf("commands: %w", err)
		}
		cons = gc
	} else {
		lc, err := log.NewConsumer(c.l, CommanderGroup, CommandsTopic, log.ConsumerOptions{})
		if err != nil {
			return fmt.Errorf("commands: %w", err)
		}
		cons = lc
	}
	defer cons.Close()
	handled, err := c.handledBefore(ctx, bookmarkGroup)
	if err != nil {
		return err
	}
	// The highest offset per partition among the handled requests: once
	// the consumer is past all of them, none can come again (they may have
	// been deleted by retention).
	pending, seen := map[int32]int64{}, map[int32]int64{}
	setPending := func() {
		clear(pending)
		for src := range handled {
			var p int32
			var o int64
			if _, err := fmt.Sscanf(src, "%d:%d", &p, &o); err == nil && o >= pending[p] {
				pending[p] = o
			}
		}
	}
	setPending()
	for {
		recs, err := cons.Poll(ctx)
		if err == nil && reassigned.Swap(false) {
			// Partitions taken over from another node: the audit records
			// it wrote for requests it had not committed are after the
			// bookmark; find them before handling those requests.
			if handled, err = c.handledBefore(ctx, bookmarkGroup); err != nil {
				return err
			}
			setPending()
		}
		if err != nil {
			if ctx.Err() != nil {
				fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := cons.Commit(fctx); err != nil {
					return fmt.Errorf("commands: final commit: %w", err)
				}
				return nil
			}
			return fmt.Errorf("commands: %w", err)
		}
		for i := range recs {
			r := &recs[i]
			seen[r.Partition] = r.Offset
			src := strconv.Itoa(int(r.Partition)) + ":" + strconv.FormatInt(r.Offset, 10)
			if handled[src] {
				delete(handled, src)
				continue
			}
			if err := c.handle(ctx, r, src); err != nil {
				return err
			}
		}
		if err := cons.Commit(ctx); err != nil {
			return fmt.Errorf("commands: %w", err)
		}
		if len(handled) > 0 && passed(seen, pending) {
			clear(handled)
		}
		if len(handled) == 0 {
			if err := commitBookmark(ctx, c.l, bookmarkGroup, AuditTopic); err != nil {
				return fmt.Errorf("commands: %w", err)
			}
		}
	}
}

// handle decides on one request, writes its audit record durably and only
// then publishes the command.
func (c *Commander) handle(ctx context.Context, r *log.Record, src string) error {
	now := c.opts.Now()
	a := AuditRecord{RequestedAt: r.Timestamp, HandledAt: now,
		Command: CommandRef(r)}
	var req CommandRequest
	var cmd sparkplug.Command
	err := json.Unmarshal(r.Value, &req)
	a.ID, a.Path, a.Value, a.RequestedBy = req.ID, req.Path, req.Value, req.RequestedBy
	if a.ID == "" {
		a.ID = a.Command
	}
	switch {
	case err != nil:
		err = fmt.Errorf("request is not a JSON command (want {\"id\",\"path\",\"value\"}): %v", err)
	case now.Sub(r.Timestamp) > c.opts.MaxAge:
		a.Status = CommandExpired
		err = fmt.Errorf("requested %s ago, more than the maximum age %s (commands.max_age)", now.Sub(r.Timestamp).Round(time.Millisecond), c.opts.MaxAge)
	case !c.allowed(req.Path):
		err = fmt.Errorf("commands to %q are not allowed: add a pattern that matches it to commands.allow", req.Path)
	default:
		var v sparkplug.Value
		if v, err = commandValue(req.Value); err == nil {
			c.norm.hostMu.Lock()
			cmd, err = c.norm.host.Command(req.Path, v, now)
			c.norm.hostMu.Unlock()
			if c.opts.GroupConsumer != nil && errors.Is(err, sparkplug.ErrUnknownTarget) {
				err = fmt.Errorf("%w (with several Millstream nodes on one Kafka cluster, a command is typed by the node that hosts the edge node; this one does not)", err)
			}
		}
	}
	var payload []byte
	if err == nil {
		payload, err = sparkplug.Encode(cmd.Payload)
	}
	if err == nil && c.opts.Publish == nil {
		err = errors.New("no MQTT broker to publish commands")
	}
	if err != nil {
		if a.Status == "" {
			a.Status = CommandRejected
		}
		a.Reason = err.Error()
	} else {
		a.Status, a.Topic, a.Metric, a.Datatype = CommandSent, cmd.Topic.String(), cmd.Metric, cmd.Type.String()
	}
	v, merr := json.Marshal(a)
	if merr != nil {
		return fmt.Errorf("commands: audit record: %w", merr)
	}
	rec := &log.Record{Topic: AuditTopic, Key: []byte(req.Path), Value: v, Timestamp: now,
		Headers: []log.Header{{Key: headerCommandSource, Value: []byte(src)}, {Key: HeaderContentType, Value: contentTypeJSON}}}
	if err := c.l.ProduceSync(ctx, rec); err != nil {
		return fmt.Errorf("commands: write audit record: %w", err)
	}
	if a.Status == CommandSent {
		if err := c.opts.Publish(a.Topic, payload, false, 0); err != nil {
			// Audited as sent, but the broker refused it (shutting down):
			// record the failure too, so the audit trail is complete.
			c.log.Error("command not published", "id", a.ID, "path", a.Path, "error", err)
			a.Status, a.Reason, a.HandledAt = CommandRejected, "publish: "+err.Error(), c.opts.Now()
			if v, merr := json.Marshal(a); merr == nil {
				_ = c.l.ProduceSync(ctx, &log.Record{Topic: AuditTopic, Key: []byte(req.Path), Value: v, Timestamp: a.HandledAt,
					Headers: []log.Header{{Key: headerCommandSource, Value: []byte(src)}, {Key: HeaderContentType, Value: contentTypeJSON}}})
			}
		}
	}
	switch a.Status {
	case CommandSent:
		c.counts[0].Add(1)
		c.log.Info("command sent", "id", a.ID, "path", a.Path, "value", string(a.Value), "by", a.RequestedBy, "mqtt_topic", a.Topic)
	case CommandRejected:
		c.counts[1].Add(1)
		c.log.Warn("command rejected", "id", a.ID, "path", a.Path, "by", a.RequestedBy, "reason", a.Reason)
	case CommandExpired:
		c.counts[2].Add(1)
		c.log.Warn("command expired", "id", a.ID, "path", a.Path, "by", a.RequestedBy, "reason", a.Reason)
	}
	c.remember(a)
	return nil
}

func (c *Commander) allowed(path string) bool {
	for _, p := range c.allow {
		if matchPattern(p, path) {
			return true
		}
	}
	return false
}

// handledBefore reads the audit records after the bookmark: requests
// handled, but not committed, before the last stop.
func (c *Commander) handledBefore(ctx context.Context, group string) (map[string]bool, error) {
	done, err := sourcesAfterBookmark(ctx, c.l, group, AuditTopic, headerCommandSource)
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	return done, nil
}

var commanderDesc = prometheus.NewDesc("millstream_commands_total", "Command requests handled, by outcome (sent, rejected, expired).", []string{"status"}, nil)

// Describe implements prometheus.Collector.
func (c *Commander) Describe(ch chan<- *prometheus.Desc) { ch <- commanderDesc }

// Collect implements prometheus.Collector.
func (c *Commander) Collect(ch chan<- prometheus.Metric) {
	for i, s := range []string{CommandSent, CommandRejected, CommandExpired} {
		ch <- prometheus.MustNewConstMetric(commanderDesc, prometheus.CounterValue, float64(c.counts[i].Load()), s)
	}
}
