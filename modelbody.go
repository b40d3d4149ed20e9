package failover

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"strings"
)

// bodyModel is where a request body names its model: the name (escapes
// decoded) and the spans of the body that hold it, to be replaced as they
// are when an endpoint sends it under another name.
type bodyModel struct {
	name string
	// spans are the byte ranges of every value of the model: a JSON
	// string literal (quotes included) for a JSON body, or the text of a
	// multipart form field. There is usually one (held in one, without
	// an allocation of its own); a JSON object may repeat its "model"
	// member, and each is renamed.
	spans     []span
	one       [1]span
	multipart bool
}

type span struct{ start, end int }

// find finds the model a request body names: the top-level "model"
// member of a JSON object, or the "model" field of a multipart/form-data
// body (the audio and image uploads). It reports false when the body
// names none, or is not one of those. It decodes nothing but the model's
// own value: the rest of the body is walked, not parsed. m must not be
// copied afterwards (its spans may point into it).
func (m *bodyModel) find(contentType string, body []byte) bool {
	m.spans = m.one[:0]
	if isMultipart(contentType) {
		return m.multipartModel(contentType, body)
	}
	return m.jsonModel(body)
}

// jsonModel finds the model of a JSON object body. As JSON decoders do,
// the last "model" member counts; when it is not a non-empty string
// (null, a number), the body names no model.
func (m *bodyModel) jsonModel(doc []byte) bool {
	var last []byte
	whole := topFields(doc, func(key []byte, start, end int) bool {
		if !keyIs(key, "model") {
			return true
		}
		last = doc[start:end]
		if last[0] == '"' {
			m.spans = append(m.spans, span{start, end})
		}
		return true
	})
	if !whole || len(last) < 3 || last[0] != '"' {
		return false
	}
	name, ok := unquoteJSON(last)
	if !ok || name == "" {
		return false
	}
	m.name = name
	return true
}

// keyIs reports whether key, a JSON member name as written (escapes not
// decoded), is name.
func keyIs(key []byte, name string) bool {
	if bytes.IndexByte(key, '\\') < 0 {
		return string(key) == name
	}
	var s string
	if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &s) != nil {
		return false
	}
	return s == name
}

// isMultipart reports whether a Content-Type is multipart/form-data.
func isMultipart(ct string) bool {
	const mp = "multipart/form-data"
	return len(ct) >= len(mp) && strings.EqualFold(ct[:len(mp)], mp)
}

// multipartModel finds the "model" field of a multipart/form-data body:
// a part whose Content-Disposition names it "model" and no file. The
// parts are walked by their boundary; only the part headers are parsed.
func (m *bodyModel) multipartModel(contentType string, body []byte) bool {
	_, params, err := mime.ParseMediaType(contentType)
	boundary := params["boundary"]
	if err != nil || boundary == "" {
		return false
	}
	delim := []byte("--" + boundary)
	// The first delimiter starts the body or a line.
	i := 0
	if !bytes.HasPrefix(body, delim) {
		j := bytes.Index(body, append([]byte("\n"), delim...))
		if j < 0 {
			return false
		}
		i = j + 1
	}
	m.multipart = true
	var name string
	for {
		i += len(delim)
		if bytes.HasPrefix(body[i:], []byte("--")) {
			break // the closing delimiter
		}
		eol := bytes.IndexByte(body[i:], '\n')
		if eol < 0 {
			return false
		}
		hdrStart := i + eol + 1
		// The part's headers end at a blank line.
		hdrEnd, contentStart := headerEnd(body, hdrStart)
		if hdrEnd < 0 {
			return false
		}
		// Its content ends before the line break of the next delimiter.
		next := bytes.Index(body[contentStart:], append([]byte("\n"), delim...))
		if next < 0 {
			return false
		}
		contentEnd := contentStart + next
		i = contentEnd + 1
		if contentEnd > contentStart && body[contentEnd-1] == '\r' {
			contentEnd--
		}
		if isModelField(body[hdrStart:hdrEnd]) {
			m.spans = append(m.spans, span{contentStart, contentEnd})
			name = string(body[contentStart:contentEnd])
		}
	}
	if len(m.spans) == 0 || name == "" {
		return false
	}
	m.name = name
	return true
}

// headerEnd finds the blank line that ends the part headers starting at
// body[i]: it returns where the headers end (after the last header's line
// break) and where the content starts, or -1.
func headerEnd(body []byte, i int) (int, int) {
	if bytes.HasPrefix(body[i:], []byte("\r\n")) {
		return i, i + 2 // no header at all
	}
	if bytes.HasPrefix(body[i:], []byte("\n")) {
		return i, i + 1
	}
	crlf := bytes.Index(body[i:], []byte("\r\n\r\n"))
	lf := bytes.Index(body[i:], []byte("\n\n"))
	switch {
	case crlf >= 0 && (lf < 0 || crlf < lf):
		return i + crlf + 2, i + crlf + 4
	case lf >= 0:
		return i + lf + 1, i + lf + 2
	}
	return -1, -1
}

// isModelField reports whether a part's header block (its header lines)
// names the form field "model" and no file.
func isModelField(block []byte) bool {
	for len(block) > 0 {
		line := block
		if i := bytes.IndexByte(block, '\n'); i >= 0 {
			line, block = block[:i], block[i+1:]
		} else {
			block = nil
		}
		k, v, ok := bytes.Cut(bytes.TrimSuffix(line, []byte{'\r'}), []byte{':'})
		if !ok || !strings.EqualFold(string(bytes.TrimSpace(k)), "Content-Disposition") {
			continue
		}
		disp, params, err := mime.ParseMediaType(string(v))
		if err != nil || disp != "form-data" {
			return false
		}
		_, file := params["filename"]
		return params["name"] == "model" && !file
	}
	return false
}

// splice is a body with the spans of its model replaced: the parts to send
// in order, and their length. It is made once per attempt that renames
// the model, with the reader the attempt sends (first) in the same
// allocation.
type splice struct {
	all   [][]byte
	inner [3][]byte // all's storage for one span
	n     int64
	first spliceReader
}

// newSplice returns body with each of spans (in order, not overlapping)
// replaced by with. It copies nothing: the parts are slices of body and
// with.
func newSplice(body []byte, spans []span, with []byte) *splice {
	s := &splice{n: int64(len(body))}
	s.all = s.inner[:0]
	at := 0
	for _, sp := range spans {
		s.all = append(s.all, body[at:sp.start], with)
		s.n += int64(len(with) - (sp.end - sp.start))
		at = sp.end
	}
	s.all = append(s.all, body[at:])
	s.first.parts = s.all
	return s
}

// reader returns a fresh reader of the spliced body: the first call the
// one made with the splice, the others a new one.
func (s *splice) reader() io.ReadCloser {
	if !s.first.taken {
		s.first.taken = true
		return &s.first
	}
	return &spliceReader{parts: s.all}
}

// getBody returns a new reader of the spliced body, for an http.Request's
// GetBody.
func (s *splice) getBody() (io.ReadCloser, error) { return &spliceReader{parts: s.all}, nil }

// spliceReader reads the parts of a splice one after the other. The parts
// are shared by every reader of the splice and never written.
type spliceReader struct {
	parts [][]byte
	i     int  // the part being read
	off   int  // how much of it was read
	taken bool // handed out (the splice's first reader)
}

func (r *spliceReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && r.i < len(r.parts) {
		c := copy(p[n:], r.parts[r.i][r.off:])
		n += c
		if r.off += c; r.off == len(r.parts[r.i]) {
			r.i, r.off = r.i+1, 0
		}
	}
	if n == 0 && r.i == len(r.parts) && len(p) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

// WriteTo writes what is left to w, so that io.Copy copies nothing in
// between.
func (r *spliceReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.i < len(r.parts) {
		n, err := w.Write(r.parts[r.i][r.off:])
		total += int64(n)
		if r.off += n; r.off == len(r.parts[r.i]) {
			r.i, r.off = r.i+1, 0
		}
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (r *spliceReader) Close() error { return nil }

// jsonString returns s as a JSON string literal, escaped as
// encoding/json escapes it.
func jsonString(s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return b
}
