package sparkplug

import (
	"fmt"
	"strings"
)

// Namespace is the Sparkplug B topic namespace element (the first topic level).
const Namespace = "spBv1.0"

// MessageType is the message type element of a Sparkplug topic.
type MessageType string

// Sparkplug B message types.
const (
	NBIRTH MessageType = "NBIRTH"
	NDEATH MessageType = "NDEATH"
	NDATA  MessageType = "NDATA"
	NCMD   MessageType = "NCMD"
	DBIRTH MessageType = "DBIRTH"
	DDEATH MessageType = "DDEATH"
	DDATA  MessageType = "DDATA"
	DCMD   MessageType = "DCMD"
	// STATE is the primary host application state message, topic spBv1.0/STATE/{host_id}.
	STATE MessageType = "STATE"
)

// IsDevice reports whether the message type addresses a device (DBIRTH, DDEATH, DDATA, DCMD).
func (t MessageType) IsDevice() bool {
	return t == DBIRTH || t == DDEATH || t == DDATA || t == DCMD
}

// IsNode reports whether the message type addresses an edge node (NBIRTH, NDEATH, NDATA, NCMD).
func (t MessageType) IsNode() bool {
	return t == NBIRTH || t == NDEATH || t == NDATA || t == NCMD
}

// Topic is a parsed Sparkplug B topic.
//
// For node messages Device is empty; for device messages it is set. For STATE
// messages only HostID is set.
type Topic struct {
	Type     MessageType
	Group    string
	EdgeNode string
	Device   string
	HostID   string
}

// String formats the topic back to its MQTT form.
func (t Topic) String() string {
	switch {
	case t.Type == STATE:
		return Namespace + "/STATE/" + t.HostID
	case t.Device != "":
		return Namespace + "/" + t.Group + "/" + string(t.Type) + "/" + t.EdgeNode + "/" + t.Device
	default:
		return Namespace + "/" + t.Group + "/" + string(t.Type) + "/" + t.EdgeNode
	}
}

// TopicError is returned by ParseTopic for a topic that is not a valid Sparkplug B topic.
type TopicError struct {
	Topic  string
	Reason string
}

func (e *TopicError) Error() string {
	return fmt.Sprintf("sparkplug: invalid topic %q: %s", e.Topic, e.Reason)
}

// ParseTopic parses a Sparkplug B topic:
//
//	spBv1.0/{group_id}/{NBIRTH|NDEATH|NDATA|NCMD}/{edge_node_id}
//	spBv1.0/{group_id}/{DBIRTH|DDEATH|DDATA|DCMD}/{edge_node_id}/{device_id}
//	spBv1.0/STATE/{host_id}
//
// Identifiers must be non-empty and must not contain the MQTT wildcards '+' and '#'.
// Errors are *TopicError values naming the offending element.
func ParseTopic(s string) (Topic, error) {
	fail := func(format string, args ...any) (Topic, error) {
		return Topic{}, &TopicError{Topic: s, Reason: fmt.Sprintf(format, args...)}
	}
	parts := strings.Split(s, "/")
	if parts[0] != Namespace {
		return fail("namespace is %q, want %q", parts[0], Namespace)
	}
	if len(parts) < 3 {
		return fail("has %d levels, want at least 3", len(parts))
	}
	if parts[1] == string(STATE) {
		if len(parts) != 3 {
			return fail("STATE topic has %d levels, want 3 (spBv1.0/STATE/{host_id})", len(parts))
		}
		if err := checkID(parts[2]); err != "" {
			return fail("host_id %s", err)
		}
		return Topic{Type: STATE, HostID: parts[2]}, nil
	}
	if len(parts) < 4 {
		return fail("has %d levels, want 4 or 5 (spBv1.0/{group_id}/{type}/{edge_node_id}[/{device_id}])", len(parts))
	}
	t := Topic{Type: MessageType(parts[2]), Group: parts[1], EdgeNode: parts[3]}
	switch {
	case t.Type.IsNode():
		if len(parts) != 4 {
			return fail("%s topic has %d levels, want 4 (no device_id)", t.Type, len(parts))
		}
	case t.Type.IsDevice():
		if len(parts) != 5 {
			return fail("%s topic has %d levels, want 5 (with device_id)", t.Type, len(parts))
		}
		t.Device = parts[4]
	default:
		return fail("unknown message type %q", parts[2])
	}
	if err := checkID(t.Group); err != "" {
		return fail("group_id %s", err)
	}
	if err := checkID(t.EdgeNode); err != "" {
		return fail("edge_node_id %s", err)
	}
	if t.Type.IsDevice() {
		if err := checkID(t.Device); err != "" {
			return fail("device_id %s", err)
		}
	}
	return t, nil
}

// checkID returns why id is not a valid Sparkplug identifier, or "".
func checkID(id string) string {
	if id == "" {
		return "is empty"
	}
	if strings.ContainsAny(id, "+#") {
		return fmt.Sprintf("%q contains an MQTT wildcard", id)
	}
	return ""
}
