package broker

import (
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/millstream/millstream/config"
)

// acl evaluates config.ACL rules. A nil *acl allows everything (no rules
// configured).
//
// Rules are evaluated in order and the first rule whose user and filters match
// decides; deny wins over allow within a rule; no matching rule denies.
//
// Publishing and delivering check a concrete topic: a rule matches when the
// topic matches one of its filters. Subscribing checks a topic filter, which
// may cover many topics: a rule matches when the subscription's filter
// overlaps one of its filters, and the subscription is allowed only when it
// overlaps none of the rule's deny filters and lies entirely inside one of its
// allow filters. So a granted subscription never receives a topic the ACL
// denies, and "#" is refused to a user who may only read "plant/#" (they
// subscribe to "plant/#" instead). Deliveries are checked again per message,
// which also covers sessions restored after the ACL was changed.
type acl struct {
	rules []aclRule
}

type aclRule struct {
	user      string // "*" for everyone
	publish   bool
	subscribe bool
	allow     [][]string // filters split into levels
	deny      [][]string
}

func newACL(rules []config.ACL) (*acl, error) {
	if len(rules) == 0 {
		return nil, nil
	}
	a := &acl{}
	for i, r := range rules {
		where := fmt.Sprintf("mqtt.acl[%d]", i)
		if r.User == "" {
			return nil, fmt.Errorf("%s: user is empty (use a username, or \"*\" for everyone)", where)
		}
		ar := aclRule{user: r.User}
		switch r.Action {
		case "publish":
			ar.publish = true
		case "subscribe":
			ar.subscribe = true
		case "all", "":
			ar.publish, ar.subscribe = true, true
		default:
			return nil, fmt.Errorf("%s: action %q is not one of publish, subscribe, all", where, r.Action)
		}
		if len(r.Allow) == 0 && len(r.Deny) == 0 {
			return nil, fmt.Errorf("%s: the rule has neither allow nor deny filters, so it matches nothing", where)
		}
		for _, f := range r.Allow {
			if !mqtt.IsValidFilter(f, false) || strings.HasPrefix(f, "$share/") {
				return nil, fmt.Errorf("%s: allow filter %q is not a valid MQTT topic filter (levels separated by /, + for one level, # only as the last level)", where, f)
			}
			ar.allow = append(ar.allow, strings.Split(f, "/"))
		}
		for _, f := range r.Deny {
			if !mqtt.IsValidFilter(f, false) || strings.HasPrefix(f, "$share/") {
				return nil, fmt.Errorf("%s: deny filter %q is not a valid MQTT topic filter (levels separated by /, + for one level, # only as the last level)", where, f)
			}
			ar.deny = append(ar.deny, strings.Split(f, "/"))
		}
		a.rules = append(a.rules, ar)
	}
	return a, nil
}

// userMatches compares without converting user to a string (no allocation).
func (r *aclRule) userMatches(user []byte) bool {
	return r.user == "*" || r.user == string(user)
}

// allowPublish reports whether user may publish to topic.
func (a *acl) allowPublish(user []byte, topic string) bool {
	if a == nil {
		return true
	}
	for i := range a.rules {
		r := &a.rules[i]
		if !r.publish || !r.userMatches(user) {
			continue
		}
		if d, ok := r.decideTopic(topic); ok {
			return d
		}
	}
	return false
}

// allowRead reports whether user may subscribe to filter, or receive a
// message on topic (a filter without wildcards).
func (a *acl) allowRead(user []byte, filter string) bool {
	if a == nil {
		return true
	}
	if strings.HasPrefix(filter, "$share/") { // $share/{group}/{filter}
		rest := filter[len("$share/"):]
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			filter = rest[i+1:]
		}
	}
	wild := strings.ContainsAny(filter, "+#")
	var levels []string
	if wild {
		levels = strings.Split(filter, "/")
	}
	for i := range a.rules {
		r := &a.rules[i]
		if !r.subscribe || !r.userMatches(user) {
			continue
		}
		var d, ok bool
		if wild {
			d, ok = r.decideFilter(levels)
		} else {
			d, ok = r.decideTopic(filter)
		}
		if ok {
			return d
		}
	}
	return false
}

// decideTopic returns (allowed, matched) for a concrete topic.
func (r *aclRule) decideTopic(topic string) (bool, bool) {
	for _, f := range r.deny {
		if matchTopic(f, topic) {
			return false, true
		}
	}
	for _, f := range r.allow {
		if matchTopic(f, topic) {
			return true, true
		}
	}
	return false, false
}

// decideFilter returns (allowed, matched) for a subscription filter.
func (r *aclRule) decideFilter(sub []string) (bool, bool) {
	for _, f := range r.deny {
		if filtersOverlap(f, sub) {
			return false, true
		}
	}
	matched := false
	for _, f := range r.allow {
		if filterContains(f, sub) {
			return true, true
		}
		if filtersOverlap(f, sub) {
			matched = true
		}
	}
	return false, matched
}

// dollarExcluded reports whether a wildcard first level of one side cannot
// match a $-topic on the other side [MQTT-4.7.2-1].
func dollarExcluded(a, b []string) bool {
	da := len(a[0]) > 0 && a[0][0] == '$'
	db := len(b[0]) > 0 && b[0][0] == '$'
	return (da && (b[0] == "+" || b[0] == "#")) || (db && (a[0] == "+" || a[0] == "#"))
}

// matchTopic reports whether filter (split into levels) matches topic. It
// walks topic in place and does not allocate.
func matchTopic(filter []string, topic string) bool {
	if len(topic) > 0 && topic[0] == '$' && (filter[0] == "+" || filter[0] == "#") {
		return false
	}
	i := 0
	for {
		level := topic
		j := strings.IndexByte(topic, '/')
		if j >= 0 {
			level = topic[:j]
		}
		if i >= len(filter) {
			return false
		}
		switch f := filter[i]; f {
		case "#":
			return true
		case "+":
		default:
			if f != level {
				return false
			}
		}
		i++
		if j < 0 {
			break
		}
		topic = topic[j+1:]
	}
	// "a/#" also matches "a" [MQTT-4.7.1-2].
	return i == len(filter) || (i == len(filter)-1 && filter[i] == "#")
}

// filtersOverlap reports whether some topic matches both filters.
func filtersOverlap(a, b []string) bool {
	if dollarExcluded(a, b) {
		return false
	}
	for i := 0; ; i++ {
		switch {
		case i < len(a) && a[i] == "#", i < len(b) && b[i] == "#":
			return true
		case i == len(a) && i == len(b):
			return true
		case i == len(a):
			return i == len(b)-1 && b[i] == "#"
		case i == len(b):
			return i == len(a)-1 && a[i] == "#"
		case a[i] == "+" || b[i] == "+" || a[i] == b[i]:
			continue
		default:
			return false
		}
	}
}

// filterContains reports whether every topic matching sub also matches f.
func filterContains(f, sub []string) bool {
	if dollarExcluded(f, sub) {
		return false
	}
	for i := 0; ; i++ {
		switch {
		case i < len(f) && f[i] == "#":
			return true
		case i == len(sub):
			return i == len(f)
		case i == len(f):
			return false
		case sub[i] == "#":
			return false // f[i] is not "#"
		case f[i] == "+":
			continue
		case sub[i] == "+":
			return false // f[i] is a fixed level
		case f[i] == sub[i]:
			continue
		default:
			return false
		}
	}
}
