package kafkaproto

import (
	"reflect"
	"sort"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type versionRange struct{ min, max int16 }

// supported lists the requests and versions the server implements; ApiVersions
// advertises exactly these. Lower bounds exclude versions with the old
// message-set formats (magic 0/1), which the server neither decodes nor
// encodes; upper bounds stop before versions that need features the server
// does not have (topic ids in Fetch/Produce, batched groups in OffsetFetch
// v8+, max-timestamp ListOffsets v7+, the KIP-848 consumer protocol).
var supported = map[int16]versionRange{
	kmsg.Produce.Int16():         {3, 9},
	kmsg.Fetch.Int16():           {4, 12},
	kmsg.ListOffsets.Int16():     {1, 6},
	kmsg.Metadata.Int16():        {0, 12},
	kmsg.OffsetCommit.Int16():    {0, 8},
	kmsg.OffsetFetch.Int16():     {1, 7},
	kmsg.FindCoordinator.Int16(): {0, 3},
	kmsg.JoinGroup.Int16():       {0, 9},
	kmsg.Heartbeat.Int16():       {0, 4},
	kmsg.LeaveGroup.Int16():      {0, 5},
	kmsg.SyncGroup.Int16():       {0, 5},
	kmsg.DescribeGroups.Int16():  {0, 5},
	kmsg.ListGroups.Int16():      {0, 4},
	// v0 is advertised because librdkafka enables SASL only when the
	// range includes it; a v0 handshake itself is refused (see
	// handleSASLHandshake): clients that can use v1 do.
	kmsg.SASLHandshake.Int16():    {0, 1},
	kmsg.ApiVersions.Int16():      {0, 3},
	kmsg.CreateTopics.Int16():     {0, 7},
	kmsg.DeleteRecords.Int16():    {0, 2},
	kmsg.InitProducerID.Int16():   {0, 4},
	kmsg.DescribeConfigs.Int16():  {0, 4},
	kmsg.SASLAuthenticate.Int16(): {0, 2},
}

func apiKeys() []kmsg.ApiVersionsResponseApiKey {
	keys := make([]kmsg.ApiVersionsResponseApiKey, 0, len(supported))
	for k, v := range supported {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, v.min, v.max
		keys = append(keys, ak)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].ApiKey < keys[j].ApiKey })
	return keys
}

func (c *conn) handleApiVersions(req *kmsg.ApiVersionsRequest) kmsg.Response {
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	if v := supported[kmsg.ApiVersions.Int16()]; req.Version > v.max {
		// KIP-511: answer a too-new ApiVersions with a v0 response carrying
		// UNSUPPORTED_VERSION and our range, so the client retries lower.
		resp.Version = 0
		resp.ErrorCode = kerr.UnsupportedVersion.Code
	}
	resp.ApiKeys = apiKeys()
	return resp
}

// apiLabel is the metrics label of an API key.
func apiLabel(key int16) string {
	if name := kmsg.NameForKey(key); name != "" && name != "Unknown" {
		return name
	}
	return "Unknown"
}

// rawError is the response to a request the server cannot parse at all (an
// API key or version beyond what franz-go's kmsg knows): a body of only an
// int16 error code. Most responses that have a top-level error code start
// with it (after throttle time in newer versions), so a client reads an
// error rather than silence, and the connection stays usable.
type rawError struct {
	key  int16
	code int16
}

// rawErrorResponse answers an unparseable request. ApiVersions gets the
// KIP-511 v0 answer so that clients newer than kmsg still connect.
func rawErrorReply(key int16, code int16) kmsg.Response {
	if key == kmsg.ApiVersions.Int16() {
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.Version = 0
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		resp.ApiKeys = apiKeys()
		return resp
	}
	return &rawErrorResponse{rawError{key: key, code: code}}
}

// rawErrorResponse adapts rawError to kmsg.Response for the writer.
type rawErrorResponse struct{ rawError }

func (r *rawErrorResponse) Key() int16        { return r.key }
func (r *rawErrorResponse) MaxVersion() int16 { return 0 }
func (r *rawErrorResponse) SetVersion(int16)  {}
func (r *rawErrorResponse) GetVersion() int16 { return 0 }
func (r *rawErrorResponse) IsFlexible() bool  { return false }
func (r *rawErrorResponse) AppendTo(dst []byte) []byte {
	return append(dst, byte(r.code>>8), byte(r.code))
}
func (r *rawErrorResponse) ReadFrom([]byte) error     { return nil }
func (r *rawErrorResponse) RequestKind() kmsg.Request { return nil }

// unsupportedResponse answers a request kmsg parsed but the server does not
// implement (at that version): the response of the request's own version
// with UNSUPPORTED_VERSION in its top-level error code, where it has one.
func unsupportedResponse(req kmsg.Request) kmsg.Response {
	resp := req.ResponseKind()
	setTopLevelError(resp, kerr.UnsupportedVersion.Code)
	return resp
}

func setTopLevelError(resp kmsg.Response, code int16) {
	v := reflect.ValueOf(resp)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return
	}
	f := v.Elem().FieldByName("ErrorCode")
	if f.IsValid() && f.Kind() == reflect.Int16 && f.CanSet() {
		f.SetInt(int64(code))
	}
}

// errorCode finds the error code a response reports, for metrics: the
// top-level code, or else the first non-zero code of a topic, partition or
// member.
func errorCode(resp kmsg.Response) int16 {
	if r, ok := resp.(*rawErrorResponse); ok {
		return r.code
	}
	v := reflect.ValueOf(resp)
	if v.Kind() != reflect.Pointer {
		return 0
	}
	return findErrorCode(v.Elem(), 0)
}

func findErrorCode(v reflect.Value, depth int) int16 {
	if v.Kind() != reflect.Struct || depth > 3 {
		return 0
	}
	if f := v.FieldByName("ErrorCode"); f.IsValid() && f.Kind() == reflect.Int16 && f.Int() != 0 {
		return int16(f.Int())
	}
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if f.Kind() != reflect.Slice || f.Type().Elem().Kind() != reflect.Struct {
			continue
		}
		for j := 0; j < f.Len(); j++ {
			if code := findErrorCode(f.Index(j), depth+1); code != 0 {
				return code
			}
		}
	}
	return 0
}

// codeLabel is the metrics label of an error code.
func codeLabel(code int16) string {
	if code == 0 {
		return "NONE"
	}
	if e, ok := kerr.ErrorForCode(code).(*kerr.Error); ok && e != kerr.UnknownServerError || code == kerr.UnknownServerError.Code {
		return e.Message
	}
	return strconv.Itoa(int(code))
}
