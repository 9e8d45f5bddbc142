package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"

	mlog "github.com/millstream/millstream/log"
	"github.com/millstream/millstream/uns"
)

// stateTopic is broker.DefaultStateTopic, where the broker keeps sessions and
// retained messages. Spelled out here because broker imports config.
const stateTopic = "__mqtt.state"

// maxPartitions bounds partitions per topic: each partition is a directory
// of segment files with an open active segment, so thousands of them exhaust
// file descriptors long before they help throughput on one machine.
const maxPartitions = 1024

// Validate checks everything that Load cannot check while reading: ranges,
// allowed values, combinations, and that TLS files exist. It returns every
// problem (errors.Join), each naming the key ("mqtt.listeners[0].address"),
// what is wrong and what is allowed, with file:line in front when the value
// came from a file (or "environment MILLSTREAM_..." from the environment).
func Validate(c Config) error {
	return joinErrors(validate(c))
}

type checker struct {
	c    *Config
	errs []*fieldError
}

// add reports a problem at path. cur is the value complained about (nil for
// problems of a whole section); see origin.
func (k *checker) add(path string, cur any, format string, args ...any) {
	o := k.c.origin(path, cur)
	k.errs = append(k.errs, &fieldError{where: o.where, line: o.line, path: path, msg: fmt.Sprintf(format, args...)})
}

// origin returns where the value at path came from, or the zero origin.
// A single value is attributed to the file or environment only while it
// still holds the value loaded from there (a flag may have replaced it). A
// key that was not given is attributed to the nearest enclosing key that was
// (the list item a missing tls.key_file belongs to, say).
func (c *Config) origin(path string, cur any) origin {
	if len(c.src) == 0 {
		return origin{}
	}
	if o, ok := c.src[path]; ok {
		if o.leaf && cur != nil && fmt.Sprint(cur) != o.value {
			return origin{}
		}
		return o
	}
	for p := parentPath(path); p != ""; p = parentPath(p) {
		if o, ok := c.src[p]; ok && !o.leaf {
			return o
		}
	}
	return origin{}
}

// parentPath strips the last key or index from a key path.
func parentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i >= 0 {
			return p[:i]
		}
		return ""
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

// orList writes "a", "a or b", "a, b or c".
func orList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

func (k *checker) oneOf(path, val string, allowed ...string) {
	if slices.Contains(allowed, val) {
		return
	}
	if val == "" {
		k.add(path, val, "is empty; use %s", orList(allowed))
		return
	}
	k.add(path, val, "%q is not allowed; use %s", val, orList(allowed))
}

func validate(c Config) []*fieldError {
	k := &checker{c: &c}
	if strings.TrimSpace(c.DataDir) == "" {
		k.add("data_dir", c.DataDir, "is empty; give the directory for the log and derived state, e.g. ./data")
	}
	k.log(c.Log)
	k.mqtt(c.MQTT, c.HTTP, c.KafkaEndpoint)
	if c.KafkaEndpoint.Enabled && c.Log.Backend == "kafka" {
		k.add("kafka_endpoint.enabled", c.KafkaEndpoint.Enabled, "the Kafka endpoint serves the embedded log; with log.backend: kafka, Kafka tools connect to the cluster itself (set enabled: false)")
	}
	k.oneOf("logging.level", c.Logging.Level, "debug", "info", "warn", "error")
	k.oneOf("logging.format", c.Logging.Format, "text", "json")
	k.sparkplug(c.Sparkplug)
	if c.UNS.TreeWindow <= 0 {
		k.add("uns.tree_window", c.UNS.TreeWindow, "must be positive, e.g. 24h")
	}
	if c.UNS.BatchWait < 0 || c.UNS.BatchWait > Duration(time.Second) {
		k.add("uns.batch_wait", c.UNS.BatchWait, "must be between 0 and 1s, e.g. 5ms")
	}
	if c.Replicate.Enabled {
		k.replicate(c.Replicate)
	}
	k.historian(c.Historian)
	seen := map[Duration]bool{}
	for i, d := range c.Pipeline.RollupIntervals {
		p := "pipeline.rollup_intervals[" + strconv.Itoa(i) + "]"
		switch td := time.Duration(d); {
		case td < time.Second || td > 24*time.Hour || td%time.Second != 0:
			k.add(p, d, "%s is out of range; use whole seconds from 1s to 1d, e.g. 1m", d)
		case seen[d]:
			k.add(p, d, "%s is listed twice", d)
		}
		seen[d] = true
	}
	if d := time.Duration(c.Pipeline.RollupGrace); d <= 0 || d > time.Hour {
		k.add("pipeline.rollup_grace", c.Pipeline.RollupGrace, "%s is out of range; use above 0 to 1h, e.g. 10s", c.Pipeline.RollupGrace)
	}
	k.oneOf("uns.format", c.UNS.Format, "json", "protobuf")
	for i, m := range c.UNS.Mappings {
		p := "uns.mappings[" + strconv.Itoa(i) + "]"
		field, err := uns.CheckMappingRule(uns.MappingRule(m))
		if err != nil {
			if field == "" {
				field = "topic"
			}
			k.add(p+"."+field, mappingField(m, field), "%v", err)
		}
	}
	for i, pat := range c.Commands.Allow {
		if err := uns.ValidatePattern(pat); err != nil {
			k.add("commands.allow["+strconv.Itoa(i)+"]", pat, "%v; use a namespace path with + (one level) and # (the rest), e.g. acme/plant1/+/Setpoint", err)
		}
	}
	if d := time.Duration(c.Commands.MaxAge); d <= 0 || d > 24*time.Hour {
		k.add("commands.max_age", c.Commands.MaxAge, "%s is out of range; use above 0 to 24h", c.Commands.MaxAge)
	}
	return k.errs
}

// mappingField is the value of a mapping rule's field, for error origins.
func mappingField(m Mapping, field string) any {
	switch field {
	case "path":
		return m.Path
	case "tag":
		return m.Tag
	case "value":
		return m.Value
	case "timestamp":
		return m.Timestamp
	case "quality":
		return m.Quality
	case "scale":
		return m.Scale
	}
	return m.Topic
}

func (k *checker) sparkplug(s Sparkplug) {
	switch {
	case s.HostID == "":
		k.add("sparkplug.host_id", s.HostID, "is empty; name the host application, e.g. millstream")
	case strings.ContainsAny(s.HostID, "/+#") || !utf8.ValidString(s.HostID):
		k.add("sparkplug.host_id", s.HostID, "%q is not one MQTT topic level (no /, + or #)", s.HostID)
	}
	if s.ReorderWindow < 0 || s.ReorderWindow > 127 {
		k.add("sparkplug.reorder_window", s.ReorderWindow, "%d is out of range; use 0 (strict order) to 127", s.ReorderWindow)
	}
	if d := time.Duration(s.CheckpointInterval); d < 100*time.Millisecond || d > time.Hour {
		k.add("sparkplug.checkpoint_interval", s.CheckpointInterval, "%s is out of range; use 100ms to 1h", s.CheckpointInterval)
	}
}

func (k *checker) log(l Log) {
	k.oneOf("log.backend", l.Backend, "embedded", "kafka")
	if l.Backend == "kafka" {
		k.kafka(l.Kafka)
	}
	k.oneOf("log.fsync", l.Fsync, "group", "always")
	if l.FsyncInterval <= 0 || time.Duration(l.FsyncInterval) > 10*time.Second {
		// Above 10s an acknowledgement could wait longer than MQTT clients
		// wait for a PUBACK before resending.
		k.add("log.fsync_interval", l.FsyncInterval, "%s is out of range; use a duration above 0 and at most 10s, e.g. 1ms", l.FsyncInterval)
	}
	if l.FsyncMinInterval < 0 || time.Duration(l.FsyncMinInterval) > 10*time.Second {
		// The same bound as fsync_interval: it adds to every PUBACK's wait.
		k.add("log.fsync_min_interval", l.FsyncMinInterval, "%s is out of range; use 0 (no spacing) or a duration of at most 10s, e.g. 10ms", l.FsyncMinInterval)
	}
	if l.FsyncBytes <= 0 {
		k.add("log.fsync_bytes", l.FsyncBytes, "%s is out of range; use a size above 0, e.g. 4MiB", l.FsyncBytes)
	}
	if l.SegmentBytes < 4<<10 || l.SegmentBytes > 1<<30 {
		// The embedded log refuses segments above 1 GiB; below 4 KiB a
		// segment holds too few records to be worth a file.
		k.add("log.segment_bytes", l.SegmentBytes, "%s is out of range; use 4KiB to 1GiB, e.g. 128MiB", l.SegmentBytes)
	}
	if l.SegmentAge <= 0 {
		k.add("log.segment_age", l.SegmentAge, "%s is out of range; use a duration above 0, e.g. 1d (retention deletes whole segments, so they must roll)", l.SegmentAge)
	}
	if l.Partitions < 1 || l.Partitions > maxPartitions {
		k.add("log.partitions", l.Partitions, "%d is out of range; use 1 to %d", l.Partitions, maxPartitions)
	}
	if l.RetentionAge <= 0 && l.RetentionAge != -1 {
		k.add("log.retention_age", l.RetentionAge, "%s is out of range; use a duration above 0, e.g. 7d, or -1 to keep records forever", l.RetentionAge)
	}
	if l.RetentionBytes <= 0 && l.RetentionBytes != -1 {
		k.add("log.retention_bytes", l.RetentionBytes, "%s is out of range; use a size above 0, e.g. 10GiB, or -1 for no size limit", l.RetentionBytes)
	}

	names := make([]string, 0, len(l.Topics))
	for name := range l.Topics {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t := l.Topics[name]
		p := "log.topics[" + keyName(name) + "]"
		if err := mlog.ValidateTopicName(name); err != nil {
			k.add(p, nil, "%v", err)
		}
		if t.Partitions < 0 || t.Partitions > maxPartitions {
			k.add(p+".partitions", t.Partitions, "%d is out of range; use 1 to %d, or 0 (or leave it out) for log.partitions", t.Partitions, maxPartitions)
		}
		if t.RetentionAge < -1 {
			k.add(p+".retention_age", t.RetentionAge, "%s is out of range; use a duration above 0, -1 to keep records forever, or 0 (or leave it out) for log.retention_age", t.RetentionAge)
		}
		if t.RetentionBytes < -1 {
			k.add(p+".retention_bytes", t.RetentionBytes, "%s is out of range; use a size above 0, -1 for no size limit, or 0 (or leave it out) for log.retention_bytes", t.RetentionBytes)
		}
		if name != stateTopic {
			continue
		}
		// The broker replays this topic in order to restore sessions and
		// retained messages, and deletes old records itself once it has
		// written a snapshot. More partitions would lose the order; retention
		// would delete live state (a retained message nobody updated).
		if !(t.Partitions == 1 || t.Partitions == 0 && l.Partitions == 1) {
			k.add(p+".partitions", t.Partitions, "the broker keeps sessions and retained messages in %s, which needs exactly 1 partition; set partitions: 1 or remove the entry", stateTopic)
		}
		if !(t.RetentionAge == -1 || t.RetentionAge == 0 && l.RetentionAge == -1) {
			k.add(p+".retention_age", t.RetentionAge, "%s holds the broker's live state, which must not expire; set retention_age: -1 or remove the entry", stateTopic)
		}
		if !(t.RetentionBytes == -1 || t.RetentionBytes == 0 && l.RetentionBytes == -1) {
			k.add(p+".retention_bytes", t.RetentionBytes, "%s holds the broker's live state, which must not be cut by size; set retention_bytes: -1 or remove the entry", stateTopic)
		}
	}
}

// bind is a configured listen address, to find two that collide.
type bind struct {
	path       string
	host, port string
	addr       string
}

func (k *checker) mqtt(m MQTT, h HTTP, ke KafkaEndpoint) {
	var binds []bind
	addBind := func(path, addr, example string) {
		if msg := addrProblem(addr, example); msg != "" {
			k.add(path, addr, "%s", msg)
			return
		}
		host, port, _ := net.SplitHostPort(addr)
		binds = append(binds, bind{path: path, host: host, port: port, addr: addr})
	}

	if len(m.Listeners) == 0 {
		k.add("mqtt.listeners", nil, "no listeners; configure at least one, e.g. - {name: tcp, type: tcp, address: 127.0.0.1:1883}")
	}
	names := map[string]int{}
	for i, ls := range m.Listeners {
		p := "mqtt.listeners[" + strconv.Itoa(i) + "]"
		if ls.Name == "" {
			k.add(p+".name", ls.Name, "is empty; give every listener a unique name (metrics and logs are labelled with it)")
		} else if j, dup := names[ls.Name]; dup {
			k.add(p+".name", ls.Name, "%q is also the name of mqtt.listeners[%d]; names must be unique", ls.Name, j)
		} else {
			names[ls.Name] = i
		}
		k.oneOf(p+".type", ls.Type, "tcp", "websocket")
		addBind(p+".address", ls.Address, "127.0.0.1:1883")
		k.tls(p+".tls", ls.TLS)
	}
	addBind("http.address", h.Address, "127.0.0.1:8080")
	if ke.Enabled {
		addBind("kafka_endpoint.address", ke.Address, "127.0.0.1:9092")
		if a := ke.AdvertisedAddress; a != "" {
			if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" || port == "0" {
				k.add("kafka_endpoint.advertised_address", a, "%q is not host:port with a port other than 0, e.g. millstream.plant1.example:9092", a)
			}
		}
	}
	for i := range binds {
		for j := 0; j < i; j++ {
			if a, b := binds[j], binds[i]; collide(a, b) {
				// Report it at the address the file (or environment)
				// set, which is the one the operator will look for.
				if k.c.origin(b.path, b.addr).where == "" && k.c.origin(a.path, a.addr).where != "" {
					a, b = b, a
				}
				k.add(b.path, b.addr, "%q and %s (%q) both listen on port %s; give each its own port", b.addr, a.path, a.addr, b.port)
			}
		}
	}

	users := map[string]int{}
	for i, u := range m.Users {
		p := "mqtt.users[" + strconv.Itoa(i) + "]"
		for _, sc := range []struct{ key, val, mech string }{{"scram_sha256", u.ScramSHA256, "SCRAM-SHA-256:"}, {"scram_sha512", u.ScramSHA512, "SCRAM-SHA-512:"}} {
			if sc.val != "" && (!strings.HasPrefix(sc.val, sc.mech) || strings.Count(sc.val, ":") != 4) {
				k.add(p+"."+sc.key, "(hidden)", "is not a %s credential; generate it with: echo -n 'the password' | millstream passwd --scram", strings.TrimSuffix(sc.mech, ":"))
			}
		}
		if u.Username == "" {
			k.add(p+".username", u.Username, "is empty; every user needs a username")
		} else if j, dup := users[u.Username]; dup {
			k.add(p+".username", u.Username, "%q is also mqtt.users[%d]; usernames must be unique", u.Username, j)
		} else {
			users[u.Username] = i
		}
		if msg := bcryptProblem(u.PasswordHash); msg != "" {
			k.add(p+".password_hash", u.PasswordHash, "%s", msg)
		}
	}

	for i, r := range m.ACL {
		p := "mqtt.acl[" + strconv.Itoa(i) + "]"
		if r.User == "" {
			k.add(p+".user", r.User, "is empty; use a username, or \"*\" for everyone")
		}
		switch r.Action {
		case "", "publish", "subscribe", "all":
		default:
			k.add(p+".action", r.Action, "%q is not allowed; use publish, subscribe or all (empty also means all)", r.Action)
		}
		if len(r.Allow) == 0 && len(r.Deny) == 0 {
			k.add(p, nil, "the rule has neither allow nor deny filters, so it matches nothing; add at least one")
		}
		for j, f := range r.Allow {
			if msg := filterProblem(f); msg != "" {
				k.add(p+".allow["+strconv.Itoa(j)+"]", f, "%s", msg)
			}
		}
		for j, f := range r.Deny {
			if msg := filterProblem(f); msg != "" {
				k.add(p+".deny["+strconv.Itoa(j)+"]", f, "%s", msg)
			}
		}
	}

	k.limits(m.Limits)

	if err := mlog.ValidateTopicName(m.IngressTopic); err != nil {
		k.add("mqtt.ingress_topic", m.IngressTopic, "%v", err)
	} else if m.IngressTopic == stateTopic {
		k.add("mqtt.ingress_topic", m.IngressTopic, "%q is the broker's own state topic; choose another name, e.g. mqtt.ingress", m.IngressTopic)
	}
}

func (k *checker) limits(l Limits) {
	d := Default().MQTT.Limits
	const p = "mqtt.limits."
	// MQTT's variable-length packet size tops out just above 256 MiB; below
	// 16 bytes not even a CONNECT fits.
	if s := l.MaxPacketSize; s != 0 && s != -1 && (s < 16 || s > 256<<20) {
		k.add(p+"max_packet_size", s, "%s is out of range; use 16B to 256MiB, 0 for the default (%s), or -1 for the protocol maximum", s, d.MaxPacketSize)
	}
	if l.MaxConnections < -1 {
		k.add(p+"max_connections", l.MaxConnections, "%d is out of range; use a number above 0, 0 for the default (%d), or -1 for unlimited", l.MaxConnections, d.MaxConnections)
	}
	// max_inflight is a uint16, so every value fits; 0 means the default.
	switch e := l.MaxSessionExpiry; {
	case e < 0 && e != -1:
		k.add(p+"max_session_expiry", e, "%s is out of range; use a duration of 1s or more, 0 for the default (%s), or -1 for the protocol maximum (about 136 years)", e, d.MaxSessionExpiry)
	case e > 0 && time.Duration(e) < time.Second:
		k.add(p+"max_session_expiry", e, "%s is below 1s; MQTT counts session expiry in whole seconds", e)
	}
	if q := l.MaxQueuedMessages; q < -1 || q > 65535 {
		k.add(p+"max_queued_messages", q, "%d is out of range; use 1 to 65535, 0 for the default (%d), or -1 for the maximum (65535)", q, d.MaxQueuedMessages)
	}
}

func (k *checker) historian(h Historian) {
	for _, r := range []struct {
		key string
		d   Duration
	}{{"historian.retention", h.Retention}, {"historian.rollup_retention_1m", h.RollupRetention1m}, {"historian.rollup_retention_1h", h.RollupRetention1h}} {
		if r.d != -1 && r.d <= 0 {
			k.add(r.key, r.d, "%s is out of range; use a duration above 0, e.g. 90d, or -1 to keep forever", r.d)
		}
	}
	if h.Retention > 0 && (h.RollupRetention1m > 0 && h.RollupRetention1m < h.Retention || h.RollupRetention1h > 0 && h.RollupRetention1h < h.Retention) {
		k.add("historian.retention", h.Retention, "is longer than a rollup retention; rollups are meant to outlive the raw points (e.g. retention: 90d, rollup_retention_1m: 1y, rollup_retention_1h: -1)")
	}
	if d := time.Duration(h.OutOfOrderWindow); d < 0 || d > 24*time.Hour {
		k.add("historian.out_of_order_window", h.OutOfOrderWindow, "%s is out of range; use 0 to 1d, e.g. 1m", h.OutOfOrderWindow)
	}
	if d := time.Duration(h.FlushInterval); d < 100*time.Millisecond || d > time.Hour {
		k.add("historian.flush_interval", h.FlushInterval, "%s is out of range; use 100ms to 1h, e.g. 10s", h.FlushInterval)
	}
	for i, d := range h.Deadband {
		p := "historian.deadband[" + strconv.Itoa(i) + "]"
		if err := uns.ValidatePattern(d.Pattern); err != nil {
			k.add(p+".pattern", d.Pattern, "%v; use a namespace pattern, e.g. acme/+/+/temperature", err)
		}
		if !(d.MaxDeviation > 0) || math.IsInf(d.MaxDeviation, 0) {
			k.add(p+".max_deviation", d.MaxDeviation, "%v is out of range; use a positive number in the tag's unit, above its noise, e.g. 0.2", d.MaxDeviation)
		}
	}
	t := h.Tier
	if d := time.Duration(t.Interval); d < time.Second || d > 24*time.Hour {
		k.add("historian.tier.interval", t.Interval, "%s is out of range; use 1s to 1d, e.g. 1m", t.Interval)
	}
	switch {
	case t.After < 0:
		k.add("historian.tier.after", t.After, "%s is out of range; use 0 (no tiering) or an age such as 30d", t.After)
	case t.After > 0 && t.Dir == "" && t.S3.Bucket == "":
		k.add("historian.tier.after", t.After, "is set but no place is: set historian.tier.dir or historian.tier.s3.bucket")
	case t.Dir != "" && t.S3.Bucket != "":
		k.add("historian.tier.dir", t.Dir, "and historian.tier.s3.bucket are both set; choose one")
	case t.After > 0 && time.Duration(t.After) < time.Duration(h.OutOfOrderWindow)+time.Duration(h.Partition):
		k.add("historian.tier.after", t.After, "%s is shorter than historian.partition plus historian.out_of_order_window; partitions would move while still being written", t.After)
	}
	if t.S3.Bucket != "" {
		if _, port, err := net.SplitHostPort(t.S3.Endpoint); err != nil && (t.S3.Endpoint == "" || strings.Contains(t.S3.Endpoint, "/")) || port == "" && strings.Contains(t.S3.Endpoint, ":") {
			k.add("historian.tier.s3.endpoint", t.S3.Endpoint, "%q: give host[:port] without a scheme, e.g. s3.eu-central-1.amazonaws.com or 127.0.0.1:9000", t.S3.Endpoint)
		}
		if (t.S3.AccessKey == "") != (t.S3.SecretKey == "") {
			k.add("historian.tier.s3.access_key", "(hidden)", "access_key and secret_key go together (both empty: anonymous)")
		}
	}
	if d := time.Duration(h.Partition); d < time.Minute || d > 7*24*time.Hour || (24*time.Hour)%d != 0 && d%(24*time.Hour) != 0 {
		k.add("historian.partition", h.Partition, "%s is out of range; use a divisor or multiple of a day from 1m to 7d, e.g. 2h", h.Partition)
	}
}

func (k *checker) replicate(r Replicate) {
	switch {
	case r.Site == "":
		k.add("replicate.site", r.Site, "is empty; name this plant on the remote, e.g. plant1 (it must never change: it marks every replicated record)")
	case strings.ContainsAny(r.Site, "/ ") || !utf8.ValidString(r.Site):
		k.add("replicate.site", r.Site, "%q: use letters, digits, . _ - (no / or spaces)", r.Site)
	}
	if len(r.Remote.Brokers) == 0 {
		k.add("replicate.remote.brokers", r.Remote.Brokers, "is empty; list the remote Kafka brokers, e.g. [cloud-kafka1:9093]")
	}
	for i, b := range r.Remote.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			k.add("replicate.remote.brokers["+strconv.Itoa(i)+"]", b, "%q is not host:port", b)
		}
	}
	k.oneOf("replicate.remote.compression", r.Remote.Compression, "zstd", "lz4", "snappy", "gzip", "none")
	if r.Remote.Bandwidth < 0 {
		k.add("replicate.remote.bandwidth", r.Remote.Bandwidth, "%s is out of range; use bytes per second, e.g. 2MB, or 0 for no cap", r.Remote.Bandwidth)
	}
	if r.Remote.ReplicationFactor < 0 {
		k.add("replicate.remote.replication_factor", r.Remote.ReplicationFactor, "%d is out of range; use 0 (the cluster's default) or the number of replicas", r.Remote.ReplicationFactor)
	}
	if r.Remote.SASL.Mechanism != "" {
		k.oneOf("replicate.remote.sasl.mechanism", r.Remote.SASL.Mechanism, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
	}
	if r.BacklogAlertRatio <= 0 || r.BacklogAlertRatio > 1 {
		k.add("replicate.backlog_alert_ratio", r.BacklogAlertRatio, "%v is out of range; use a fraction of the local retention above 0 and at most 1, e.g. 0.8", r.BacklogAlertRatio)
	}
	if len(r.Flows) == 0 && !r.Commands.Enabled {
		k.add("replicate.flows", nil, "no flows and no commands: add a flow, e.g. - {name: points, topics: [uns.points]}, or set enabled: false")
	}
	names := map[string]int{}
	for i, f := range r.Flows {
		p := "replicate.flows[" + strconv.Itoa(i) + "]"
		if err := mlog.ValidateTopicName(f.Name); err != nil {
			k.add(p+".name", f.Name, "%v (flow names follow topic name rules)", err)
		} else if j, dup := names[f.Name]; dup {
			k.add(p+".name", f.Name, "%q is also replicate.flows[%d]; flow names must be unique (they name the checkpoints)", f.Name, j)
		} else {
			names[f.Name] = i
		}
		if len(f.Topics) == 0 {
			k.add(p+".topics", f.Topics, "is empty; name the local topics to replicate, e.g. [uns.points]")
		}
		for j, t := range f.Topics {
			if err := mlog.ValidateTopicName(t); err != nil {
				k.add(p+".topics["+strconv.Itoa(j)+"]", t, "%v", err)
			}
		}
		if f.RemoteTopic != "" {
			if err := mlog.ValidateTopicName(f.RemoteTopic); err != nil {
				k.add(p+".remote_topic", f.RemoteTopic, "%v", err)
			}
		}
		for _, l := range []struct {
			key string
			ps  []string
		}{{"include", f.Include}, {"deny", f.Deny}} {
			for j, pat := range l.ps {
				if err := uns.ValidatePattern(pat); err != nil {
					k.add(p+"."+l.key+"["+strconv.Itoa(j)+"]", pat, "%v", err)
				}
			}
		}
	}
	if c := r.Commands; c.Enabled {
		for _, t := range []struct{ key, name string }{{"topic", c.Topic}, {"results_topic", c.ResultsTopic}} {
			if err := mlog.ValidateTopicName(t.name); err != nil {
				k.add("replicate.commands."+t.key, t.name, "%v", err)
			}
		}
		for j, pat := range c.Paths {
			if err := uns.ValidatePattern(pat); err != nil {
				k.add("replicate.commands.paths["+strconv.Itoa(j)+"]", pat, "%v", err)
			}
		}
	}
}

func (k *checker) kafka(c Kafka) {
	if len(c.Brokers) == 0 {
		k.add("log.kafka.brokers", c.Brokers, "is empty; with log.backend: kafka list the seed brokers, e.g. [kafka1:9092, kafka2:9092]")
	}
	for i, b := range c.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			k.add("log.kafka.brokers["+strconv.Itoa(i)+"]", b, "%q is not host:port, e.g. kafka1:9092", b)
		}
	}
	if c.ClientID == "" {
		k.add("log.kafka.client_id", c.ClientID, "is empty; name this client for the brokers' logs and quotas, e.g. millstream")
	}
	if d := time.Duration(c.GroupSessionTimeout); d < 6*time.Second || d > 30*time.Minute {
		k.add("log.kafka.group_session_timeout", c.GroupSessionTimeout, "%s is out of range; use 6s to 30m (and within the brokers' group.min/max.session.timeout.ms), e.g. 45s", c.GroupSessionTimeout)
	}
	if c.ReplicationFactor < 0 {
		k.add("log.kafka.replication_factor", c.ReplicationFactor, "%d is out of range; use 0 (the cluster's default) or the number of replicas, e.g. 3", c.ReplicationFactor)
	}
	if c.SASL.Mechanism != "" {
		k.oneOf("log.kafka.sasl.mechanism", c.SASL.Mechanism, "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
		if c.SASL.Username == "" {
			k.add("log.kafka.sasl.username", c.SASL.Username, "is empty but log.kafka.sasl.mechanism is set")
		}
	}
	t := c.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "") {
		k.add("log.kafka.tls.enabled", t.Enabled, "is false but TLS files are set; set enabled: true or remove the files")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		k.add("log.kafka.tls.cert_file", t.CertFile, "cert_file and key_file go together (mutual TLS); set both or neither")
	}
	for _, f := range []struct{ key, name string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		if f.name == "" {
			continue
		}
		if fi, err := os.Stat(f.name); err != nil || fi.IsDir() {
			k.add("log.kafka.tls."+f.key, f.name, "cannot read the PEM file %q (a relative path starts from the working directory)", f.name)
		}
	}
}

func (k *checker) tls(p string, t TLS) {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		k.add(p+".key_file", t.KeyFile, "is empty but tls.cert_file is set; set both to enable TLS")
	case t.CertFile == "" && t.KeyFile != "":
		k.add(p+".cert_file", t.CertFile, "is empty but tls.key_file is set; set both to enable TLS, or remove key_file")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		k.add(p+".client_ca_file", t.ClientCAFile, "needs tls.cert_file and tls.key_file: client certificates are checked only on a TLS listener")
	}
	if t.RequireClientCert && t.ClientCAFile == "" {
		k.add(p+".require_client_cert", t.RequireClientCert, "needs tls.client_ca_file (the CA that signs the client certificates)")
	}
	for _, f := range []struct{ key, name string }{
		{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"client_ca_file", t.ClientCAFile},
	} {
		if f.name == "" {
			continue
		}
		fi, err := os.Stat(f.name)
		switch {
		case err != nil:
			reason := err.Error()
			var pe *fs.PathError
			if errors.As(err, &pe) {
				reason = pe.Err.Error()
			}
			k.add(p+"."+f.key, f.name, "cannot read %q: %s (a relative path starts from the working directory)", f.name, reason)
		case fi.IsDir():
			k.add(p+"."+f.key, f.name, "%q is a directory; give the PEM file", f.name)
		}
	}
}

// addrProblem says what is wrong with a listen address, or "" if nothing.
func addrProblem(addr, example string) string {
	_, examplePort, _ := net.SplitHostPort(example)
	if addr == "" {
		return fmt.Sprintf("is empty; use host:port, e.g. %s (or :%s for every interface)", example, examplePort)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			reason = ae.Err
		}
		return fmt.Sprintf("%q is not host:port (%s); use e.g. %s, or :%s for every interface", addr, reason, example, examplePort)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Sprintf("%q has port %q; use a number from 0 to 65535 (0 picks a free port)", addr, port)
	}
	if _, err := netip.ParseAddr(host); host != "" && err != nil && !isHostName(host) {
		return fmt.Sprintf("%q has host %q, which is neither an IP address nor a host name; use e.g. %s, or :%s for every interface", addr, host, example, examplePort)
	}
	return ""
}

// isHostName reports whether h is a DNS name: dot-separated labels of
// letters, digits, '-' and '_' (common in internal names).
func isHostName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// collide reports whether two listen addresses cannot both be bound: the same
// port on the same host, or on a host and the wildcard address. Port 0 picks
// a free port each time, so it never collides.
func collide(a, b bind) bool {
	pa, _ := strconv.Atoi(a.port)
	pb, _ := strconv.Atoi(b.port)
	if pa != pb || pa == 0 {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return a.host == b.host || wildcard(a.host) || wildcard(b.host)
}

// bcryptProblem says what is wrong with a password hash, or "" if nothing.
// It never quotes the value: a password pasted here by mistake must not end
// up in logs.
func bcryptProblem(h string) string {
	const gen = "generate one with: millstream passwd"
	switch {
	case h == "":
		return "is empty; " + gen
	case !strings.HasPrefix(h, "$2a$") && !strings.HasPrefix(h, "$2b$") && !strings.HasPrefix(h, "$2y$"):
		return "is not a bcrypt hash (one starts with $2a$, $2b$ or $2y$; never put the password itself here); " + gen
	case len(h) != 60:
		return fmt.Sprintf("is %d characters long, but a bcrypt hash has 60 (cut off when copied?); %s", len(h), gen)
	}
	if _, err := bcrypt.Cost([]byte(h)); err != nil {
		return fmt.Sprintf("is not a valid bcrypt hash (%v); %s", err, gen)
	}
	return ""
}

// filterProblem says what is wrong with an MQTT topic filter in an ACL, or ""
// if nothing. The rules are MQTT's (section 4.7 of the v5 specification).
func filterProblem(f string) string {
	const how = " (levels separated by /, + for one whole level, # only as the whole last level, e.g. plant/+/temperature or plant/#)"
	bad := func(why string) string { return fmt.Sprintf("%q is not a valid MQTT topic filter: %s", f, why) }
	switch {
	case f == "":
		return "is empty; use a topic filter such as plant/# or plant/+/temperature"
	case len(f) > 65535:
		return fmt.Sprintf("is %d bytes long; MQTT topic filters are at most 65535", len(f))
	case !utf8.ValidString(f):
		return bad("it is not valid UTF-8")
	case strings.ContainsRune(f, 0):
		return bad("it contains a NUL character")
	case strings.HasPrefix(f, "$share/"):
		return bad("shared-subscription filters ($share/group/...) are not ACL filters; use the topic filter after the group name")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return bad("# must be the whole last level" + how)
		}
		if strings.Contains(l, "+") && l != "+" {
			return bad("+ must be a whole level" + how)
		}
	}
	return ""
}
