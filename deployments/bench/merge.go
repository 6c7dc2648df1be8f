package bench

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A partial run (cmd/bench -only) measures some sections; writing only
// those would throw away every other figure of BENCHMARKS.md. So its
// results are merged into the ones already written, section by section
// (### headings): a section the run did not measure keeps the text it
// had; the memory table keeps the readings of processes and moments the
// run did not measure again (merged before rendering, so that the targets
// see them all); the targets table keeps the goals the run did not judge;
// notes of earlier runs stay unless they name a section that ran again.
// Sections that share a heading (propagation, consul and seed; scale,
// gobench and leases) are replaced together, so run them together.

const (
	notMeasured = "Not measured in this run."
	notesHead   = "#### Sections that did not complete"
)

// render is the report's results; those of a partial run are merged into
// old, the results written before.
func (r *Report) render(old string) (string, error) {
	if len(r.Only) == 0 || old == "" {
		return r.Markdown()
	}
	r.Memory = mergeMemory(parseMemory(old), r.Memory)
	text, err := r.Markdown()
	if err != nil {
		return "", err
	}
	return mergeResults(old, text, r.Only), nil
}

// generated is the text between the markers of doc, "" without them.
func generated(doc string) string {
	i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	if i < 0 || j < i {
		return ""
	}
	return strings.Trim(doc[i+len(beginMarker):j], "\n")
}

// chunk is a heading and what follows it up to the next heading; the
// first chunk of a text has no heading.
type chunk struct {
	head string
	body []string
}

func (c chunk) text() string {
	lines := c.body
	if c.head != "" {
		lines = append([]string{c.head}, lines...)
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n ")
}

func (c chunk) measured() bool {
	return strings.TrimSpace(strings.Join(c.body, "\n")) != notMeasured
}

func splitChunks(text string) []chunk {
	cs := []chunk{{}}
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(line, "### ") || strings.HasPrefix(line, "#### ") {
			cs = append(cs, chunk{head: line})
			continue
		}
		cs[len(cs)-1].body = append(cs[len(cs)-1].body, line)
	}
	return cs
}

// mergeResults merges text, the results of a run of the sections only,
// into old, the results written before.
func mergeResults(old, text string, only []string) string {
	olds := splitChunks(old)
	byHead := map[string]chunk{}
	for _, c := range olds {
		byHead[c.head] = c
	}
	var out []string
	var notes []string
	for _, c := range olds {
		if c.head == notesHead {
			for _, n := range listItems(c.body) {
				if !aboutSections(n, only) {
					notes = append(notes, n)
				}
			}
		}
	}
	for _, c := range splitChunks(text) {
		o, had := byHead[c.head]
		switch {
		case c.head == "":
			out = append(out, mergeHeader(o.body, c.body, only))
		case c.head == notesHead:
			notes = append(notes, listItems(c.body)...)
		case c.head == "### Targets" && had:
			out = append(out, mergeTable(o, c).text())
		case !c.measured() && had:
			out = append(out, o.text())
		default:
			out = append(out, c.text())
		}
	}
	if notes = slices.Compact(notes); len(notes) > 0 {
		out = append(out, notesHead+"\n\n- "+strings.Join(notes, "\n- "))
	}
	return strings.Join(out, "\n\n")
}

// aboutSections tells whether a note names one of sections first.
func aboutSections(note string, sections []string) bool {
	return slices.ContainsFunc(sections, func(s string) bool {
		return strings.HasPrefix(note, s+":") || strings.HasPrefix(note, s+" ")
	})
}

func listItems(lines []string) []string {
	var items []string
	for _, l := range lines {
		if item, ok := strings.CutPrefix(l, "- "); ok {
			items = append(items, item)
		}
	}
	return items
}

var partialLine = regexp.MustCompile("^`cmd/bench -only ([^`]+)`")

// mergeHeader keeps old's lines on when earlier runs measured (but not
// those of a partial run whose sections all ran again) before text's
// line and its machine.
func mergeHeader(old, text []string, only []string) string {
	var out []string
	for _, p := range paragraphs(old) {
		if m := partialLine.FindStringSubmatch(p); m != nil {
			if !allIn(strings.Split(m[1], ","), only) {
				out = append(out, p)
			}
		} else if strings.HasPrefix(p, "Measured ") {
			out = append(out, p)
		}
	}
	return strings.Join(append(out, paragraphs(text)...), "\n\n")
}

func allIn(xs, set []string) bool {
	return !slices.ContainsFunc(xs, func(x string) bool { return !slices.Contains(set, x) })
}

func paragraphs(lines []string) []string {
	var ps []string
	for p := range strings.SplitSeq(strings.Join(lines, "\n"), "\n\n") {
		if p = strings.TrimSpace(p); p != "" {
			ps = append(ps, p)
		}
	}
	return ps
}

// mergeTable is text's table with old's rows in their place, replaced by
// text's row of the same first cell, and text's other rows after them.
func mergeTable(old, text chunk) chunk {
	key := func(row string) string { return strings.TrimSpace(strings.Split(row, "|")[1]) }
	rowsOf := func(c chunk) (head, rows, tail []string) {
		i := slices.IndexFunc(c.body, func(l string) bool { return strings.HasPrefix(l, "|---") })
		if i < 0 {
			return c.body, nil, nil
		}
		j := i + 1
		for j < len(c.body) && strings.HasPrefix(c.body[j], "| ") {
			j++
		}
		return c.body[:i+1], c.body[i+1 : j], c.body[j:]
	}
	_, oldRows, _ := rowsOf(old)
	head, newRows, tail := rowsOf(text)
	fresh := map[string]string{}
	for _, r := range newRows {
		fresh[key(r)] = r
	}
	var rows []string
	for _, r := range oldRows {
		if n, ok := fresh[key(r)]; ok {
			r = n
			delete(fresh, key(r))
		}
		rows = append(rows, r)
	}
	for _, r := range newRows {
		if _, ok := fresh[key(r)]; ok {
			rows = append(rows, r)
		}
	}
	return chunk{head: text.head, body: slices.Concat(head, rows, tail)}
}

var memRowRE = regexp.MustCompile(`^\| (.+?) \| (.+?) \| ([\d.]+) MB \| ([\d.]+) MB \|$`)

// parseMemory reads the memory table of results written before.
func parseMemory(old string) []MemRow {
	var rows []MemRow
	for _, c := range splitChunks(old) {
		if !strings.HasPrefix(c.head, "### ") || !strings.HasSuffix(c.head, "Memory") {
			continue
		}
		for _, l := range c.body {
			m := memRowRE.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			rss, _ := strconv.ParseFloat(m[3], 64)
			hwm, _ := strconv.ParseFloat(m[4], 64)
			rows = append(rows, MemRow{Process: m[1], When: m[2], Mem: Mem{RSS: uint64(rss * (1 << 20)), HWM: uint64(hwm * (1 << 20))}})
		}
	}
	return rows
}

// mergeMemory is old's readings, each replaced by fresh's of the same
// process and moment, then fresh's other readings.
func mergeMemory(old, fresh []MemRow) []MemRow {
	out := slices.Clone(old)
	for _, f := range fresh {
		i := slices.IndexFunc(out, func(o MemRow) bool { return o.Process == f.Process && o.When == f.When })
		if i >= 0 {
			out[i] = f
		} else {
			out = append(out, f)
		}
	}
	return out
}
