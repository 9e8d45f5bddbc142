package log

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// The JSON form of a record is what the HTTP API's replay endpoint and
// `millstream replay` emit, one object per record:
//
//	{"topic":"uns.points","partition":0,"offset":42,
//	 "timestamp":"2026-11-22T08:00:00.123Z",
//	 "key":"site/line1/press","value":"{\"t\":21.5}",
//	 "headers":[{"key":"qos","value":"1"}]}
//
// Payloads are mostly text (JSON, Sparkplug metric names, asset paths), so
// key, value and header values are written as JSON strings when they are
// valid UTF-8, which keeps the output readable with jq. Bytes that are not
// valid UTF-8 (Sparkplug protobuf, Modbus registers) cannot be a JSON string
// without loss, so they are written in standard base64 and flagged with a
// sibling field: "key_encoding":"base64", "value_encoding":"base64", or
// "encoding":"base64" inside a header. A nil key, value or header value is
// written as null, distinct from "" (a Kafka tombstone has a nil value).
//
// Topic names and header keys are Go strings that the log does not force to
// be UTF-8; should one not be, each invalid byte is written as U+FFFD, as
// encoding/json does. The timestamp is RFC 3339 in UTC with exactly three
// fractional digits, the log's precision; times outside RFC 3339's years
// 0000-9999 are clamped to that range.

// timestampLayout is RFC 3339 with milliseconds. Records are converted to
// UTC first, so the zone always prints as "Z".
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

var (
	minJSONTime = time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	maxJSONTime = time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC)
)

// AppendRecordJSON appends the JSON form of r to dst, without a trailing
// newline, and returns the extended slice. It allocates nothing beyond
// growing dst, so replaying into a reused buffer is allocation-free.
func AppendRecordJSON(dst []byte, r *Record) []byte {
	// One growth up front for the common case (text or base64 payloads)
	// instead of several doublings while appending.
	n := 128 + len(r.Topic) + (len(r.Key)+len(r.Value))*4/3
	for _, h := range r.Headers {
		n += 48 + len(h.Key) + len(h.Value)*4/3
	}
	dst = slices.Grow(dst, n)

	dst = append(dst, `{"topic":`...)
	dst = appendJSONText(dst, r.Topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(r.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, r.Offset, 10)
	dst = append(dst, `,"timestamp":"`...)
	ts := r.Timestamp.UTC()
	if ts.Before(minJSONTime) {
		ts = minJSONTime
	} else if ts.After(maxJSONTime) {
		ts = maxJSONTime
	}
	dst = ts.AppendFormat(dst, timestampLayout)
	dst = append(dst, `","key":`...)
	dst = appendPayload(dst, r.Key, `,"key_encoding":"base64"`)
	dst = append(dst, `,"value":`...)
	dst = appendPayload(dst, r.Value, `,"value_encoding":"base64"`)
	dst = append(dst, `,"headers":[`...)
	for i, h := range r.Headers {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"key":`...)
		dst = appendJSONText(dst, h.Key)
		dst = append(dst, `,"value":`...)
		dst = appendPayload(dst, h.Value, `,"encoding":"base64"`)
		dst = append(dst, '}')
	}
	return append(dst, "]}"...)
}

// appendPayload writes b as a JSON string, base64 followed by flag, or null.
func appendPayload(dst, b []byte, flag string) []byte {
	switch {
	case b == nil:
		return append(dst, "null"...)
	case utf8.Valid(b):
		return appendJSONEscaped(dst, b)
	default:
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, b)
		dst = append(dst, '"')
		return append(dst, flag...)
	}
}

// AppendJSONString appends s as a quoted JSON string, replacing each byte
// that is not part of valid UTF-8 with U+FFFD (as encoding/json does), so the
// output is always valid JSON. Other hand-written JSON encoders of the
// project (uns.points records) use it.
func AppendJSONString(dst []byte, s string) []byte { return appendJSONText(dst, s) }

// appendJSONText writes s as a JSON string, replacing each byte that is not
// part of valid UTF-8 with U+FFFD.
func appendJSONText(dst []byte, s string) []byte {
	if utf8.ValidString(s) {
		return appendJSONEscaped(dst, s)
	}
	// Rare: only a producer that sets a non-UTF-8 topic or header key gets
	// here, so allocating the repaired copy is fine.
	fixed := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			fixed = utf8.AppendRune(fixed, utf8.RuneError)
		} else {
			fixed = append(fixed, s[i:i+size]...)
		}
		i += size
	}
	return appendJSONEscaped(dst, fixed)
}

// jsonSafe marks the bytes that can appear unescaped in a JSON string whose
// content is valid UTF-8 (RFC 8259 section 7): everything except the
// quotation mark, the reverse solidus and the control characters below 0x20.
// Multi-byte UTF-8 sequences pass through as they are.
var jsonSafe = func() (t [256]bool) {
	for i := range t {
		t[i] = i >= 0x20 && i != '"' && i != '\\'
	}
	return t
}()

// appendJSONEscaped writes s, which must be valid UTF-8, as a quoted JSON
// string. Runs of safe bytes are copied in one append.
func appendJSONEscaped[S ~string | ~[]byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if jsonSafe[c] {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// recordJSON mirrors the JSON form for decoding. Pointers tell a missing or
// null field from an empty one.
type recordJSON struct {
	Topic         *string      `json:"topic"`
	Partition     *int32       `json:"partition"`
	Offset        *int64       `json:"offset"`
	Timestamp     *string      `json:"timestamp"`
	Key           *string      `json:"key"`
	KeyEncoding   string       `json:"key_encoding"`
	Value         *string      `json:"value"`
	ValueEncoding string       `json:"value_encoding"`
	Headers       []headerJSON `json:"headers"`
}

type headerJSON struct {
	Key      *string `json:"key"`
	Value    *string `json:"value"`
	Encoding string  `json:"encoding"`
}

// ParseRecordJSON decodes one record in the form AppendRecordJSON writes.
// topic, partition, offset and timestamp are required; a missing key, value
// or headers field reads as nil. The timestamp may be any RFC 3339 time and
// is truncated to milliseconds, the log's precision.
func ParseRecordJSON(b []byte) (Record, error) {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Record{}, fmt.Errorf("record JSON: %w", err)
	}
	switch {
	case j.Topic == nil:
		return Record{}, errors.New("record JSON: missing \"topic\"")
	case j.Partition == nil:
		return Record{}, errors.New("record JSON: missing \"partition\"")
	case j.Offset == nil:
		return Record{}, errors.New("record JSON: missing \"offset\"")
	case j.Timestamp == nil:
		return Record{}, errors.New("record JSON: missing \"timestamp\"")
	}
	ts, err := time.Parse(time.RFC3339Nano, *j.Timestamp)
	if err != nil {
		return Record{}, fmt.Errorf("record JSON: timestamp %q is not an RFC 3339 time", *j.Timestamp)
	}
	r := Record{
		Topic:     *j.Topic,
		Partition: *j.Partition,
		Offset:    *j.Offset,
		Timestamp: ts.UTC().Truncate(time.Millisecond),
	}
	if r.Key, err = decodePayload(j.Key, j.KeyEncoding); err != nil {
		return Record{}, fmt.Errorf("record JSON: key: %w", err)
	}
	if r.Value, err = decodePayload(j.Value, j.ValueEncoding); err != nil {
		return Record{}, fmt.Errorf("record JSON: value: %w", err)
	}
	if len(j.Headers) > 0 {
		r.Headers = make([]Header, len(j.Headers))
		for i, h := range j.Headers {
			if h.Key == nil {
				return Record{}, fmt.Errorf("record JSON: header %d: missing \"key\"", i)
			}
			r.Headers[i].Key = *h.Key
			if r.Headers[i].Value, err = decodePayload(h.Value, h.Encoding); err != nil {
				return Record{}, fmt.Errorf("record JSON: header %d (%q): %w", i, *h.Key, err)
			}
		}
	}
	return r, nil
}

func decodePayload(s *string, encoding string) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	switch encoding {
	case "":
		return []byte(*s), nil
	case "base64":
		b, err := base64.StdEncoding.DecodeString(*s)
		if err != nil {
			return nil, fmt.Errorf("invalid base64: %w", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("encoding %q unknown (only \"base64\" is defined)", encoding)
	}
}
