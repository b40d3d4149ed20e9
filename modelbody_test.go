package failover

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestJSONModel(t *testing.T) {
	tests := []struct {
		name, doc, want string
		spans           int // how many spans hold the model; 0 when none is found
	}{
		{"plain", `{"model":"gpt-4o","messages":[]}`, "gpt-4o", 1},
		{"last member", `{"messages":[{"role":"user","content":"the \"model\": \"x\""}],"model":"gpt-4o"}`, "gpt-4o", 1},
		{"odd spacing", "\n {\t\"model\" :\r\n \"gpt-4o\" , \"n\":1}\n", "gpt-4o", 1},
		{"escaped value", `{"model":"gpt\u002d4o\/mini"}`, "gpt-4o/mini", 1},
		{"escaped key", `{"mod\u0065l":"gpt-4o"}`, "gpt-4o", 1},
		{"unicode", `{"model":"モデル-é"}`, "モデル-é", 1},
		{"repeated: the last counts, each is renamed", `{"model":"a","x":1,"model":"b"}`, "b", 2},
		{"repeated, the last null", `{"model":"a","model":null}`, "", 0},
		{"null", `{"model":null}`, "", 0},
		{"number", `{"model":4}`, "", 0},
		{"empty", `{"model":""}`, "", 0},
		{"nested only", `{"input":{"model":"gpt-4o"}}`, "", 0},
		{"absent", `{"purpose":"batch"}`, "", 0},
		{"not an object", `["model","gpt-4o"]`, "", 0},
		{"malformed", `{"model":"gpt-4o",`, "", 0},
		{"unterminated string", `{"model":"gpt-4o}`, "", 0},
		{"not JSON", `model=gpt-4o`, "", 0},
		{"other case", `{"Model":"gpt-4o"}`, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := findModel("application/json", []byte(tt.doc))
			if ok != (tt.spans > 0) || m.name != tt.want || len(m.spans) != tt.spans {
				t.Fatalf("findModel = %q, %d spans, %v; want %q, %d spans", m.name, len(m.spans), ok, tt.want, tt.spans)
			}
			for _, sp := range m.spans {
				if lit := tt.doc[sp.start:sp.end]; lit[0] != '"' || lit[len(lit)-1] != '"' {
					t.Errorf("span %q is not a string literal", lit)
				}
			}
		})
	}
}

// multipartDoc builds a multipart/form-data body with the fields in order
// (a field named "file" is a file part) and returns its Content-Type.
func multipartDoc(t testing.TB, fields [][2]string) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		var w io.Writer
		var err error
		if f[0] == "file" {
			w, err = mw.CreateFormFile("file", "audio.wav")
		} else {
			w, err = mw.CreateFormField(f[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return mw.FormDataContentType(), buf.Bytes()
}

// formFields parses a multipart/form-data body into its fields in order,
// as mime/multipart reads them.
func formFields(t testing.TB, contentType string, body []byte) [][2]string {
	t.Helper()
	_, boundary, _ := strings.Cut(contentType, "boundary=")
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	var out [][2]string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("parsing the body: %v", err)
		}
		v, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("reading part %q: %v", p.FormName(), err)
		}
		out = append(out, [2]string{p.FormName(), string(v)})
	}
}

func TestMultipartModel(t *testing.T) {
	audio := "RIFF\x00\x01binary\r\n--not-a-boundary\r\nmodel"
	tests := []struct {
		name   string
		fields [][2]string
		want   string
	}{
		{"after the file", [][2]string{{"file", audio}, {"model", "whisper-1"}, {"language", "en"}}, "whisper-1"},
		{"before the file", [][2]string{{"model", "gpt-4o-transcribe"}, {"file", audio}}, "gpt-4o-transcribe"},
		{"none", [][2]string{{"purpose", "batch"}, {"file", audio}}, ""},
		{"empty", [][2]string{{"model", ""}, {"file", audio}}, ""},
		{"unicode", [][2]string{{"model", "modèle"}}, "modèle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, body := multipartDoc(t, tt.fields)
			m, ok := findModel(ct, body)
			if ok != (tt.want != "") || m.name != tt.want {
				t.Fatalf("findModel = %q, %v; want %q", m.name, ok, tt.want)
			}
			if !ok {
				return
			}
			sp := newSplice(body, m.spans, []byte("renamed"))
			got := formFields(t, ct, readAll(t, sp.reader()))
			want := slices.Clone(tt.fields)
			for i := range want {
				if want[i][0] == "model" {
					want[i][1] = "renamed"
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("renamed body's fields %q, want %q", got, want)
			}
		})
	}
	t.Run("a file named model is not the model", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		w, _ := mw.CreateFormFile("model", "model.bin")
		_, _ = io.WriteString(w, "gpt-4o")
		_ = mw.Close()
		if m, ok := findModel(mw.FormDataContentType(), buf.Bytes()); ok {
			t.Errorf("findModel = %q, want none", m.name)
		}
	})
	t.Run("bare line feeds and a preamble", func(t *testing.T) {
		body := "preamble\n--b\nContent-Disposition: form-data; name=\"model\"\n\nwhisper-1\n--b\nContent-Disposition: form-data; name=\"x\"\n\ny\n--b--\n"
		m, ok := findModel(`multipart/form-data; boundary=b`, []byte(body))
		if !ok || m.name != "whisper-1" {
			t.Fatalf("findModel = %q, %v; want whisper-1", m.name, ok)
		}
		got := string(readAll(t, newSplice([]byte(body), m.spans, []byte("w2")).reader()))
		if want := strings.Replace(body, "whisper-1", "w2", 1); got != want {
			t.Errorf("renamed %q, want %q", got, want)
		}
	})
	for _, bad := range []string{"multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; boundary=zz"} {
		if m, ok := findModel(bad, []byte("--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx\r\n--b--")); ok {
			t.Errorf("Content-Type %q: findModel = %q, want none", bad, m.name)
		}
	}
}

func readAll(t testing.TB, r io.Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSpliceReader: a splice reads the same bytes in any read size and
// through WriteTo, as often as it is opened, and reports its length.
func TestSpliceReader(t *testing.T) {
	body := []byte(`{"a":1,"model":"x","b":"` + strings.Repeat("z", 100) + `","model":"x"}`)
	m, ok := findModel("application/json", body)
	if !ok {
		t.Fatal("no model")
	}
	sp := newSplice(body, m.spans, []byte(`"longer-name"`))
	want := strings.ReplaceAll(string(body), `"x"`, `"longer-name"`)
	if sp.n != int64(len(want)) {
		t.Errorf("length %d, want %d", sp.n, len(want))
	}
	for _, size := range []int{1, 2, 7, 64, 4096} {
		r := sp.reader()
		var got []byte
		buf := make([]byte, size)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if string(got) != want {
			t.Errorf("read by %d: %q, want %q", size, got, want)
		}
	}
	var w bytes.Buffer
	if n, err := io.Copy(&w, sp.reader()); err != nil || n != sp.n || w.String() != want {
		t.Errorf("io.Copy: %d, %v, %q; want %d, %q", n, err, w.String(), sp.n, want)
	}
	rc, err := sp.getBody()
	if err != nil || string(readAll(t, rc)) != want {
		t.Errorf("getBody: %v", err)
	}
	if !bytes.Equal(body, []byte(`{"a":1,"model":"x","b":"`+strings.Repeat("z", 100)+`","model":"x"}`)) {
		t.Error("the splice changed the body it was made from")
	}
}

// FuzzModelRewrite checks the JSON model rewrite against encoding/json:
// for any document it finds the model a decoder finds (the last "model"
// member, a non-empty string), and the rewritten document decodes to the
// same values but for the model, now the new name, with every byte
// outside the model's spans as it was.
func FuzzModelRewrite(f *testing.F) {
	for _, seed := range [][2]string{
		{`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`, "prod-4o"},
		{"{ \"n\" : 12345678901234567890123 , \"model\":\"a\\u00e9\",\"x\":{\"model\":\"inner\"} }", "openai/gpt-4o-mini"},
		{`{"model":"a","model":"b"}`, `we"ird\name`},
		{`{"mod\u0065l":"a","unknown":[1,2.5e10,true,null,"\ud83d\ude00"]}`, "é"},
		{`{"model":null}`, "x"},
		{`{"model":"x"`, "y"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, doc, upstream string) {
		m, ok := findModel("application/json", []byte(doc))
		var decoded map[string]any
		valid := json.Unmarshal([]byte(doc), &decoded) == nil && utf8.ValidString(doc)
		if valid {
			want, isString := decoded["model"].(string)
			switch {
			case ok && (!isString || m.name != want):
				t.Fatalf("findModel(%q) = %q, encoding/json says %#v", doc, m.name, decoded["model"])
			case !ok && isString && want != "":
				t.Fatalf("findModel(%q) found nothing, encoding/json says %q", doc, want)
			}
		}
		if !ok || !utf8.ValidString(upstream) {
			return
		}
		lit := jsonString(upstream)
		sp := newSplice([]byte(doc), m.spans, lit)
		out := readAll(t, sp.reader())
		if int64(len(out)) != sp.n {
			t.Fatalf("length %d, splice says %d", len(out), sp.n)
		}
		// Every byte outside the spans is as it was.
		at, outAt := 0, 0
		for _, s := range m.spans {
			if !bytes.Equal(out[outAt:outAt+s.start-at], []byte(doc[at:s.start])) {
				t.Fatalf("bytes before a span changed: %q -> %q", doc, out)
			}
			outAt += s.start - at + len(lit)
			at = s.end
		}
		if !bytes.Equal(out[outAt:], []byte(doc[at:])) {
			t.Fatalf("bytes after the last span changed: %q -> %q", doc, out)
		}
		if !valid {
			return
		}
		var got map[string]any
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("rewritten %q does not decode: %v", out, err)
		}
		if got["model"] != upstream {
			t.Fatalf("rewritten model %#v, want %q", got["model"], upstream)
		}
		delete(got, "model")
		delete(decoded, "model")
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(decoded)
		if !bytes.Equal(a, b) {
			t.Fatalf("other members changed: %s -> %s", b, a)
		}
	})
}

// FuzzMultipartModelRewrite checks the multipart model rewrite against
// mime/multipart: the model field found is the one the reader reads, and
// after the rewrite every field but the model reads as before.
func FuzzMultipartModelRewrite(f *testing.F) {
	f.Add("whisper-1", "en", "RIFF\x00audio", "renamed", true)
	f.Add("m", "", "\r\n--x\r\n", "n", false)
	f.Fuzz(func(t *testing.T, model, language, file, upstream string, modelFirst bool) {
		fields := [][2]string{{"file", file}, {"language", language}}
		if modelFirst {
			fields = append([][2]string{{"model", model}}, fields...)
		} else {
			fields = append(fields, [2]string{"model", model})
		}
		ct, body := multipartDoc(t, fields)
		_, boundary, _ := strings.Cut(ct, "boundary=")
		for _, v := range []string{model, language, file, upstream} {
			if strings.Contains(v, boundary) {
				return // a value holding the boundary is not a valid form
			}
		}
		m, ok := findModel(ct, body)
		if ok != (model != "") || (ok && m.name != model) {
			t.Fatalf("findModel = %q, %v; the form's model is %q", m.name, ok, model)
		}
		if !ok || strings.ContainsAny(upstream, "\r\n") {
			return
		}
		got := formFields(t, ct, readAll(t, newSplice(body, m.spans, []byte(upstream)).reader()))
		want := slices.Clone(fields)
		for i := range want {
			if want[i][0] == "model" {
				want[i][1] = upstream
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("fields after the rewrite %q, want %q", got, want)
		}
	})
}

// findModel is bodyModel.find as a value, for tests: the model a body
// names, its spans copied out.
func findModel(contentType string, body []byte) (bodyModel, bool) {
	var m bodyModel
	if !m.find(contentType, body) {
		return bodyModel{}, false
	}
	m.spans = slices.Clone(m.spans)
	return m, true
}
