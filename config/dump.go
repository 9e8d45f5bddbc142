package config

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// Dump returns the configuration as YAML that Parse reads back to the same
// Config, with durations and sizes in their human form ("7d", "128MiB"):
// what "millstream config" prints, so an operator sees the effective values
// after defaults, file, environment and flags.
func Dump(c Config) ([]byte, error) {
	n := toNode(reflect.ValueOf(c))
	n.HeadComment = "Effective Millstream configuration (defaults, then the file, MILLSTREAM_* environment\n" +
		"variables and flags). Every key is described in docs/configuration.md."
	// Likewise 0 in a topic's settings: it inherits, it is not zero.
	if topics := lookupNode(n, "log", "topics"); topics != nil {
		for i := 1; i < len(topics.Content); i += 2 {
			t := topics.Content[i]
			for j := 0; j+1 < len(t.Content); j += 2 {
				if t.Content[j+1].Value == "0" {
					t.Content[j+1].LineComment = "inherits log." + t.Content[j].Value
				}
			}
		}
	}
	if c.MQTT.AllowAnonymous == nil {
		// null reads like "off"; say what unset actually does.
		if v := lookupNode(n, "mqtt", "allow_anonymous"); v != nil {
			v.LineComment = "unset: anonymous clients are allowed only while every listener is bound to a loopback address"
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("encode the configuration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode the configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// toNode builds the YAML node of a configuration value. Dump builds the tree
// itself rather than with yaml.Node.Encode because that re-parses its own
// output, and yaml.v3 fails on some strings it emits itself (carriage
// returns in plain scalars); here such strings are double-quoted. Lists of
// plain values (ACL filters) and empty collections use the [a, b] style.
func toNode(v reflect.Value) *yaml.Node {
	switch v.Type() {
	case durationType, byteSizeType:
		m, _ := v.Interface().(yaml.Marshaler).MarshalYAML() // never fails
		if i, ok := m.(int64); ok {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(i, 10)}
		}
		return str(fmt.Sprint(m))
	}
	switch v.Kind() {
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		for _, f := range yamlFields(v.Type()) {
			fv := v.FieldByIndex(f.index)
			if f.omitEmpty && fv.IsZero() {
				continue
			}
			n.Content = append(n.Content, str(f.name), toNode(fv))
		}
		return n
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		if v.Len() == 0 || v.Type().Elem().Kind() == reflect.String {
			n.Style = yaml.FlowStyle
		}
		for i := 0; i < v.Len(); i++ {
			n.Content = append(n.Content, toNode(v.Index(i)))
		}
		return n
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode}
		if v.Len() == 0 {
			n.Style = yaml.FlowStyle
		}
		keys := v.MapKeys()
		sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
		for _, k := range keys {
			n.Content = append(n.Content, str(k.String()), toNode(v.MapIndex(k)))
		}
		return n
	case reflect.Pointer:
		if v.IsNil() {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
		}
		return toNode(v.Elem())
	case reflect.String:
		return str(v.String())
	case reflect.Bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v.Bool())}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v.Int(), 10)}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatUint(v.Uint(), 10)}
	}
	// Reached only if a field of a new kind is added to the schema; the
	// Dump round-trip test catches it.
	return str(fmt.Sprint(v.Interface()))
}

// str is a string scalar. The encoder quotes it when it would otherwise read
// as another type ("true", "123", "#"); strings with control characters are
// double-quoted so they survive as escapes.
func str(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	for _, r := range s {
		if !unicode.IsPrint(r) && r != ' ' {
			n.Style = yaml.DoubleQuotedStyle
			break
		}
	}
	return n
}

// lookupNode returns the value node at keys in nested mappings, or nil.
func lookupNode(n *yaml.Node, keys ...string) *yaml.Node {
	for _, key := range keys {
		if n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return n
}
