package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// Load returns the configuration: Default, then the YAML file at path (none
// when path is ""), then the MILLSTREAM_<SECTION>_<KEY> environment variables.
// Command-line flags come last; the caller applies them with the setters.
//
// Every problem found is reported at once (errors.Join), each prefixed with
// where it is ("millstream.yaml:12: log.fsync: ..." or "environment
// MILLSTREAM_LOG_FSYNC: ..."). Load itself rejects what cannot be read into
// the schema: YAML syntax, unknown keys, wrong types, malformed durations and
// sizes. When it finds any, it adds Validate's findings too, so one run shows
// every mistake in the file; when it finds none, the caller still has to call
// Validate (after applying flags, which may change what is valid).
func Load(path string) (Config, error) {
	return load(path, os.LookupEnv)
}

// Parse is Load without the environment: it reads YAML from data, naming it
// name in messages.
func Parse(name string, data []byte) (Config, error) {
	d := newDecoder(name)
	c := Default()
	d.document(data, &c)
	return d.finish(c)
}

func load(path string, lookup func(string) (string, bool)) (Config, error) {
	d := newDecoder(path)
	c := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("read the configuration file: %w", err)
		}
		d.document(data, &c)
	}
	if !d.fatal {
		d.env(&c, lookup)
	}
	return d.finish(c)
}

// origin is where a value came from.
type origin struct {
	where string // "millstream.yaml:12" or "environment MILLSTREAM_LOG_FSYNC"
	line  int    // the line in the file, 0 for the environment
	// leaf is set for single values; value is then the value as loaded
	// (fmt.Sprint of the field). Validate attributes a problem to this origin
	// only while the field still holds that value: a flag that replaced it
	// must not be blamed on the file.
	leaf  bool
	value string
}

// fieldError is one problem: where, which key, what is wrong and what to do.
type fieldError struct {
	where string
	line  int
	path  string
	msg   string
}

func (e *fieldError) Error() string {
	var b strings.Builder
	if e.where != "" {
		b.WriteString(e.where)
		b.WriteString(": ")
	}
	if e.path != "" {
		b.WriteString(e.path)
		b.WriteString(": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

// joinErrors orders problems by line, so the report reads like the file,
// followed by those from the environment or with no location; nil for none.
func joinErrors(errs []*fieldError) error {
	if len(errs) == 0 {
		return nil
	}
	sorted := make([]*fieldError, len(errs))
	copy(sorted, errs)
	key := func(e *fieldError) int {
		if e.line > 0 {
			return e.line
		}
		return int(^uint(0) >> 1)
	}
	// Insertion sort: stable, and the lists are short.
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && key(sorted[j]) < key(sorted[j-1]); j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	out := make([]error, len(sorted))
	for i, e := range sorted {
		out[i] = e
	}
	return errors.Join(out...)
}

// maxValues bounds the values one file may expand to. A configuration has a
// few hundred; the bound stops a file whose aliases refer to aliases from
// expanding to billions of values (the "billion laughs" attack).
const maxValues = 1_000_000

// decoder reads a YAML document into a Config by walking yaml.Node and the
// Config's yaml tags together, rather than with yaml.Unmarshal, because that
// stops at the first problem, reports unknown keys without naming the
// allowed ones, and knows nothing of the key paths users search the docs for.
type decoder struct {
	file   string
	errs   []*fieldError
	src    map[string]origin
	failed []string // key paths with a problem; Validate's findings there are noise
	fatal  bool     // the file could not be read at all (YAML syntax)

	values     int                 // values decoded so far, against maxValues
	overBudget bool                // maxValues exceeded (reported once)
	active     map[*yaml.Node]bool // alias targets being decoded, to catch cycles
}

func newDecoder(file string) *decoder {
	if file == "" {
		file = "configuration"
	}
	return &decoder{file: file, src: map[string]origin{}, active: map[*yaml.Node]bool{}}
}

func (d *decoder) at(n *yaml.Node) origin {
	return origin{where: d.file + ":" + strconv.Itoa(n.Line), line: n.Line}
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	o := d.at(n)
	d.errs = append(d.errs, &fieldError{where: o.where, line: o.line, path: path, msg: fmt.Sprintf(format, args...)})
	d.failed = append(d.failed, path)
}

// covered reports whether path is, or lies under, a path that already has a
// problem.
func (d *decoder) covered(path string) bool {
	for _, p := range d.failed {
		if p == "" || path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[") {
			return true
		}
	}
	return false
}

// finish returns the configuration with its origins, and every problem found,
// plus Validate's when there were any (see Load).
func (d *decoder) finish(c Config) (Config, error) {
	if len(d.src) > 0 {
		c.src = d.src
	}
	if len(d.errs) == 0 {
		return c, nil
	}
	errs := d.errs
	if !d.fatal {
		for _, e := range validate(c) {
			if !d.covered(e.path) {
				errs = append(errs, e)
			}
		}
	}
	return c, joinErrors(errs)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntax reports a YAML syntax error with the file's name in front.
//
// The line yaml.v3 names is where the construct being parsed starts, counted
// from 0 for some errors and from 1 for others, and omitted on the first line;
// the mistake is never before it. So the message says "this line or a later
// one" rather than pretending to be exact.
func (d *decoder) syntax(err error, data []byte) {
	d.fatal = true
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	msg = "YAML syntax: " + msg + " (on this line or a later one)"
	// Tabs in indentation are the most common cause, and invisible.
	for i, l := range bytes.Split(data, []byte("\n")) {
		indent := l[:len(l)-len(bytes.TrimLeft(l, " \t"))]
		if bytes.ContainsRune(indent, '\t') {
			msg += fmt.Sprintf("; line %d is indented with a tab, and YAML allows spaces only", i+1)
			break
		}
	}
	d.errs = append(d.errs, &fieldError{where: d.file + ":" + strconv.Itoa(line), line: line, msg: msg})
}

// document decodes one YAML document into c.
func (d *decoder) document(data []byte, c *Config) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err != io.EOF { // io.EOF: an empty file, which means the defaults
			d.syntax(err, data)
		}
		return
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		n := &next
		if len(next.Content) > 0 {
			n = next.Content[0]
		}
		d.fatal = true
		d.fail(n, "", "a second YAML document starts here (after ---); put the whole configuration in one document")
		return
	} else if err != io.EOF {
		d.syntax(err, data)
		return
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = root.Content[0]
	}
	d.decode(root, reflect.ValueOf(c).Elem(), "")
}

var (
	durationType = reflect.TypeFor[Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

// tick counts one value against maxValues and reports whether decoding may
// go on.
func (d *decoder) tick(n *yaml.Node, path string) bool {
	d.values++
	if d.values <= maxValues {
		return true
	}
	if !d.overBudget {
		d.overBudget = true
		d.fail(n, path, "the file expands to more than %d values (aliases inside aliases?); simplify it", maxValues)
	}
	return false
}

// resolve follows an alias to its anchored node. release must be called when
// the caller is done with the node; ok is false (and the problem reported)
// for an alias that contains itself.
func (d *decoder) resolve(n *yaml.Node, path string) (target *yaml.Node, release func(), ok bool) {
	if n.Kind != yaml.AliasNode {
		return n, func() {}, true
	}
	if n.Alias == nil {
		d.fail(n, path, "alias *%s has no anchor &%s before it", n.Value, n.Value)
		return nil, nil, false
	}
	if d.active[n.Alias] {
		d.fail(n, path, "alias *%s is used inside the value it names; YAML aliases cannot be recursive", n.Value)
		return nil, nil, false
	}
	d.active[n.Alias] = true
	return n.Alias, func() { delete(d.active, n.Alias) }, true
}

// decode reads n into v; path is v's key path.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if !d.tick(n, path) {
		return
	}
	n, release, ok := d.resolve(n, path)
	if !ok {
		return
	}
	defer release()
	if n.Kind == yaml.AliasNode { // an alias of an alias
		d.decode(n, v, path)
		return
	}
	if t := v.Type(); t == durationType || t == byteSizeType {
		d.leaf(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.structure(n, v, path)
	case reflect.Slice:
		d.list(n, v, path)
	case reflect.Map:
		d.mapping(n, v, path)
	case reflect.Pointer:
		// Only *bool so far (mqtt.allow_anonymous), where null means unset.
		if isNull(n) {
			v.SetZero()
			return
		}
		e := reflect.New(v.Type().Elem())
		before := len(d.errs)
		d.decode(n, e.Elem(), path)
		if len(d.errs) == before {
			v.Set(e)
		}
	default:
		d.leaf(n, v, path)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMerge mirrors yaml.v3: "<<" as a plain key is the merge key.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

// pair is one key and its value in a mapping, merge keys ("<<: *base")
// already expanded.
type pair struct{ key, value *yaml.Node }

// pairs returns the entries of mapping n. Keys merged in with "<<" come first
// and give way to the mapping's own keys, as YAML specifies; a key given
// twice is reported and its second value ignored.
func (d *decoder) pairs(n *yaml.Node, path string, child func(string) string) []pair {
	var own, merged []pair
	seen := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if isMerge(k) {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "a key must be a plain name, not a %s", kindName(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.fail(k, child(k.Value), "given twice (first on line %d); keep one", line)
			continue
		}
		seen[k.Value] = k.Line
		own = append(own, pair{k, v})
	}
	for _, m := range merges {
		for _, p := range d.mergeSources(m, path, child) {
			if _, dup := seen[p.key.Value]; !dup {
				seen[p.key.Value] = p.key.Line
				merged = append(merged, p)
			}
		}
	}
	return append(merged, own...)
}

// mergeSources returns the entries a merge key's value brings in: one mapping,
// or a list of mappings of which earlier ones win.
func (d *decoder) mergeSources(v *yaml.Node, path string, child func(string) string) []pair {
	if !d.tick(v, path) {
		return nil
	}
	v, release, ok := d.resolve(v, path)
	if !ok {
		return nil
	}
	defer release()
	switch v.Kind {
	case yaml.AliasNode:
		return d.mergeSources(v, path, child)
	case yaml.MappingNode:
		return d.pairs(v, path, child)
	case yaml.SequenceNode:
		var out []pair
		seen := map[string]bool{}
		for _, m := range v.Content {
			if !d.tick(m, path) {
				return out
			}
			m, release, ok := d.resolve(m, path)
			if !ok {
				continue
			}
			if m.Kind != yaml.MappingNode {
				d.fail(m, path, "<< (merge) takes a mapping or a list of mappings, not a list holding a %s", kindName(m))
				release()
				continue
			}
			for _, p := range d.pairs(m, path, child) {
				if !seen[p.key.Value] {
					seen[p.key.Value] = true
					out = append(out, p)
				}
			}
			release()
		}
		return out
	}
	d.fail(v, path, "<< (merge) takes a mapping or a list of mappings, not a %s", kindName(v))
	return nil
}

// field is one yaml-tagged struct field.
type field struct {
	name      string
	index     []int
	omitEmpty bool // Dump leaves the key out when its value is zero
}

// yamlFields lists t's keys in declaration order (the order the docs use).
func yamlFields(t reflect.Type) []field {
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out = append(out, field{name: name, index: f.Index, omitEmpty: opts == "omitempty"})
	}
	return out
}

// andList joins "a", "b" and "c" as "a, b and c".
func andList(words []string) string {
	if len(words) == 1 {
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// keyName is a key as key paths show it: as written, or Go-quoted when it
// holds characters that would garble a message (a newline in a key would
// split one error into two lines).
func keyName(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// structure reads a mapping into struct v. Keys absent from the file keep
// their values (the defaults); null keeps them all.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, path string) {
	fields := yamlFields(v.Type())
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		what := path
		if what == "" {
			d.fail(n, "", "the file must be a mapping of sections (%s), not a %s", fieldNames(fields), kindName(n))
			return
		}
		d.fail(n, what, "must be a mapping of keys (%s), not a %s", fieldNames(fields), kindName(n))
		return
	}
	child := func(name string) string { return joinPath(path, keyName(name)) }
	for _, p := range d.pairs(n, path, child) {
		name := p.key.Value
		cp := child(name)
		i := -1
		for j, f := range fields {
			if f.name == name {
				i = j
				break
			}
		}
		if i < 0 {
			d.fail(p.key, cp, "%s", unknownKey(name, path, fields))
			continue
		}
		d.src[cp] = d.at(p.key)
		d.decode(p.value, v.FieldByIndex(fields[i].index), cp)
	}
}

func fieldNames(fields []field) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	return strings.Join(names, ", ")
}

// unknownKey explains an unknown key: the close match in the same section if
// there is one, else the section a key of that name belongs to, then the
// keys this section allows.
func unknownKey(name, section string, fields []field) string {
	msg := "unknown key"
	best, bestDist := "", 3
	for _, f := range fields {
		if dist := editDistance(strings.ToLower(name), f.name); dist < bestDist {
			best, bestDist = f.name, dist
		}
	}
	if best != "" {
		msg += " (did you mean " + best + "?)"
	} else {
		var elsewhere []string
		for _, p := range KeyPaths() {
			if p == name || strings.HasSuffix(p, "."+name) {
				elsewhere = append(elsewhere, p)
			}
		}
		if len(elsewhere) > 0 {
			msg += " here (it exists as " + andList(elsewhere) + "; check the indentation)"
		}
	}
	where := "at the top level"
	if section != "" {
		where = "in " + section
	}
	return msg + "; allowed keys " + where + ": " + fieldNames(fields)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

// list reads a sequence into slice v. A list in the file replaces the
// default list entirely: merging listeners or ACL rules item by item would
// leave the defaults' entries in places nobody can see.
func (d *decoder) list(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "must be a list (lines starting with \"- \", or [a, b]), not a %s", kindName(n))
		return
	}
	if len(n.Content) == 0 {
		v.SetZero()
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, el := range n.Content {
		ep := path + "[" + strconv.Itoa(i) + "]"
		d.src[ep] = d.at(el)
		d.decode(el, s.Index(i), ep)
	}
	v.Set(s)
}

// mapping reads a mapping into map v (log.topics), replacing it.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if isNull(n) {
		v.SetZero()
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "must be a mapping of names to settings, not a %s", kindName(n))
		return
	}
	child := func(name string) string { return path + "[" + keyName(name) + "]" }
	m := reflect.MakeMap(v.Type())
	for _, p := range d.pairs(n, path, child) {
		ep := child(p.key.Value)
		d.src[ep] = d.at(p.key)
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(p.value, e, ep)
		m.SetMapIndex(reflect.ValueOf(p.key.Value).Convert(v.Type().Key()), e)
	}
	if m.Len() == 0 {
		v.SetZero()
		return
	}
	v.Set(m)
}

// leaf reads a single value into v.
func (d *decoder) leaf(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "must be a single value, not a %s", kindName(n))
		return
	}
	if isNull(n) {
		d.fail(n, path, "has no value; give one, or remove the key to use the default")
		return
	}
	if err := setLeaf(v, n.Value); err != nil {
		d.fail(n, path, "%v", err)
		return
	}
	o, ok := d.src[path]
	if !ok {
		o = d.at(n)
	}
	o.leaf, o.value = true, fmt.Sprint(v.Interface())
	d.src[path] = o
}

// setLeaf parses s into v by v's type. The YAML file and the environment
// share it, so a value means the same in both.
func setLeaf(v reflect.Value, s string) error {
	switch v.Type() {
	case durationType:
		x, err := ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(x))
		return nil
	case byteSizeType:
		x, err := ParseByteSize(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(x))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "true", "yes", "on", "1":
			v.SetBool(true)
		case "false", "no", "off", "0":
			v.SetBool(false)
		default:
			return fmt.Errorf("%q is not a boolean; use true or false", s)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		bits := v.Type().Bits()
		x, err := strconv.ParseInt(strings.TrimSpace(s), 10, bits)
		if err != nil {
			lo, hi := -int64(1)<<(bits-1), int64(1)<<(bits-1)-1
			if errors.Is(err, strconv.ErrRange) {
				return fmt.Errorf("%s is out of range; use a whole number from %d to %d", s, lo, hi)
			}
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetInt(x)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		bits := v.Type().Bits()
		t := strings.TrimSpace(s)
		x, err := strconv.ParseUint(t, 10, bits)
		if err != nil {
			if _, ierr := strconv.ParseInt(t, 10, 64); errors.Is(err, strconv.ErrRange) || ierr == nil {
				return fmt.Errorf("%s is out of range; use a whole number from 0 to %d", s, uint64(1)<<bits-1)
			}
			return fmt.Errorf("%q is not a whole number", s)
		}
		v.SetUint(x)
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%q is not a finite number", s)
		}
		v.SetFloat(x)
	default:
		// Reached only if a field of a new type is added to the schema.
		return fmt.Errorf("values of type %s cannot be configured (a bug in package config)", v.Type())
	}
	return nil
}

// EnvVar is one environment variable that overrides a configuration key.
type EnvVar struct {
	Name string // MILLSTREAM_LOG_FSYNC
	Path string // log.fsync
	// index locates the field in Config.
	index []int
}

// EnvVars lists the environment variables Load reads: one per single-valued
// key, named MILLSTREAM_ and the key path in upper case with "." as "_".
// Lists and maps (listeners, users, acl, topics) have none: they do not fit
// in one variable.
func EnvVars() []EnvVar {
	var out []EnvVar
	var walk func(t reflect.Type, path string, index []int)
	walk = func(t reflect.Type, path string, index []int) {
		for _, f := range yamlFields(t) {
			ft := t.FieldByIndex(f.index).Type
			p := joinPath(path, f.name)
			idx := append(append([]int(nil), index...), f.index...)
			switch {
			case ft.Kind() == reflect.Struct:
				walk(ft, p, idx)
			case ft.Kind() == reflect.Slice, ft.Kind() == reflect.Map:
			default:
				name := "MILLSTREAM_" + strings.ToUpper(strings.ReplaceAll(p, ".", "_"))
				out = append(out, EnvVar{Name: name, Path: p, index: idx})
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", nil)
	return out
}

// KeyPaths lists every key of the schema, in declaration order, as the docs
// write them: "[]" marks the items of a list (mqtt.listeners[].address) and
// "[<name>]" the entries of a map (log.topics[<name>].partitions).
func KeyPaths() []string {
	var out []string
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		for _, f := range yamlFields(t) {
			ft := t.FieldByIndex(f.index).Type
			p := joinPath(path, f.name)
			out = append(out, p)
			switch ft.Kind() {
			case reflect.Struct:
				walk(ft, p)
			case reflect.Slice:
				if ft.Elem().Kind() == reflect.Struct {
					walk(ft.Elem(), p+"[]")
				}
			case reflect.Map:
				if ft.Elem().Kind() == reflect.Struct {
					walk(ft.Elem(), p+"[<name>]")
				}
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// env applies the environment overrides. An empty variable is ignored, as if
// unset: container tools often pass empty values for "not configured".
func (d *decoder) env(c *Config, lookup func(string) (string, bool)) {
	root := reflect.ValueOf(c).Elem()
	for _, e := range EnvVars() {
		s, ok := lookup(e.Name)
		if !ok || strings.TrimSpace(s) == "" {
			continue
		}
		where := "environment " + e.Name
		f := root.FieldByIndex(e.index)
		target := f
		if f.Kind() == reflect.Pointer {
			target = reflect.New(f.Type().Elem()).Elem()
		}
		if err := setLeaf(target, strings.TrimSpace(s)); err != nil {
			d.errs = append(d.errs, &fieldError{where: where, path: e.Path, msg: err.Error()})
			d.failed = append(d.failed, e.Path)
			continue
		}
		if f.Kind() == reflect.Pointer {
			f.Set(target.Addr())
		}
		d.src[e.Path] = origin{where: where, leaf: true, value: fmt.Sprint(target.Interface())}
	}
}
