package failover

import (
	"bytes"
	"encoding/json"
)

// topFields walks the members of the JSON object at the top level of doc,
// in order, without decoding any value: for each it calls f with the key
// as written between its quotes (escapes not decoded) and the span
// doc[start:end] of its value. It stops early when f returns false. It
// reports whether doc is a JSON object as far as it walked; a malformed
// document stops the walk and reports false.
//
// Strings are skipped with bytes.IndexByte, so a large body of messages
// costs a pass at memory speed, not a decode.
func topFields(doc []byte, f func(key []byte, start, end int) bool) bool {
	i := skipSpace(doc, 0)
	if i >= len(doc) || doc[i] != '{' {
		return false
	}
	i = skipSpace(doc, i+1)
	if i < len(doc) && doc[i] == '}' {
		return true
	}
	for i < len(doc) {
		if doc[i] != '"' {
			return false
		}
		keyEnd := skipString(doc, i)
		if keyEnd < 0 {
			return false
		}
		key := doc[i+1 : keyEnd-1]
		i = skipSpace(doc, keyEnd)
		if i >= len(doc) || doc[i] != ':' {
			return false
		}
		start := skipSpace(doc, i+1)
		end := skipValue(doc, start)
		if end < 0 {
			return false
		}
		if !f(key, start, end) {
			return true
		}
		i = skipSpace(doc, end)
		if i >= len(doc) {
			return false
		}
		switch doc[i] {
		case '}':
			return true
		case ',':
			i = skipSpace(doc, i+1)
		default:
			return false
		}
	}
	return false
}

// skipSpace returns the index of the first byte of doc from i on that is
// not JSON white space (len(doc) if none).
func skipSpace(doc []byte, i int) int {
	for i < len(doc) && (doc[i] == ' ' || doc[i] == '\t' || doc[i] == '\n' || doc[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at doc[i]
// (a quote), or -1 when it does not end.
func skipString(doc []byte, i int) int {
	i++
	for {
		j := bytes.IndexByte(doc[i:], '"')
		if j < 0 {
			return -1
		}
		i += j
		// A quote is escaped by an odd number of backslashes before it.
		n := 0
		for k := i - 1; k >= 0 && doc[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i
		}
	}
}

// skipValue returns the index after the JSON value that starts at doc[i],
// or -1 when it is malformed or does not end.
func skipValue(doc []byte, i int) int {
	if i >= len(doc) {
		return -1
	}
	switch doc[i] {
	case '"':
		return skipString(doc, i)
	case '{', '[':
		depth := 0
		for i < len(doc) {
			switch doc[i] {
			case '"':
				if i = skipString(doc, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	// A number, true, false or null: up to the next delimiter.
	start := i
	for i < len(doc) {
		switch doc[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return -1
			}
			return i
		}
		i++
	}
	return -1
}

// topString returns the string value of the top-level member key of doc,
// its escapes decoded, and whether there is one. A member that is not a
// string is reported absent.
func topString(doc []byte, key string) (string, bool) {
	var val []byte
	found := false
	topFields(doc, func(k []byte, start, end int) bool {
		if string(k) == key {
			val, found = doc[start:end], true
			return false
		}
		return true
	})
	if !found || len(val) < 2 || val[0] != '"' {
		return "", false
	}
	return unquoteJSON(val)
}

// unquoteJSON decodes a JSON string literal; the plain case (no escape)
// costs one copy.
func unquoteJSON(lit []byte) (string, bool) {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), true
	}
	var s string
	if err := jsonUnmarshalString(lit, &s); err != nil {
		return "", false
	}
	return s, true
}

// jsonUnmarshalString decodes a JSON string literal with escapes.
func jsonUnmarshalString(lit []byte, s *string) error { return json.Unmarshal(lit, s) }
