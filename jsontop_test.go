package failover

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestTopFields(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want []string // key=value, as written
		ok   bool
	}{
		{`{}`, nil, true},
		{` { "a" : 1 , "b":"x" } `, []string{`a=1`, `b="x"`}, true},
		{`{"model":"gpt-4o","messages":[{"role":"user","content":"a \"quoted\" } ] {"}],"n":2}`,
			[]string{`model="gpt-4o"`, `messages=[{"role":"user","content":"a \"quoted\" } ] {"}]`, `n=2`}, true},
		{`{"k\"ey":"v\\","x":{"y":[1,{"z":"}"}]},"t":true,"f":null}`,
			[]string{`k\"ey="v\\"`, `x={"y":[1,{"z":"}"}]}`, `t=true`, `f=null`}, true},
		{`[1,2]`, nil, false},
		{`{"a":`, nil, false},
		{`{"a":1`, nil, false},
		{`{"a" 1}`, nil, false},
		{`{"a":"unterminated}`, nil, false},
		{``, nil, false},
	} {
		var got []string
		ok := topFields([]byte(tc.doc), func(k []byte, s, e int) bool {
			got = append(got, string(k)+"="+tc.doc[s:e])
			return true
		})
		if ok != tc.ok || strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("topFields(%s) = %q, %v; want %q, %v", tc.doc, got, ok, tc.want, tc.ok)
		}
	}
}

func TestTopString(t *testing.T) {
	doc := []byte(`{"messages":[{"model":"inner"}],"model":"gpt-\u00e9\"x","user":42}`)
	if got, ok := topString(doc, "model"); !ok || got != "gpt-é\"x" {
		t.Errorf(`topString(model) = %q, %v; want "gpt-é\"x", true`, got, ok)
	}
	if _, ok := topString(doc, "user"); ok {
		t.Error("topString found a number as a string")
	}
	if _, ok := topString(doc, "absent"); ok {
		t.Error("topString found an absent key")
	}
}

// FuzzTopFields: on any document encoding/json accepts as an object,
// topFields walks every top-level member, with the same keys and values
// as a decode.
func FuzzTopFields(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1,"b":[{"c":"}"}],"d":"\"\\"}`, `{"model":"x","messages":[]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		var want map[string]json.RawMessage
		if json.Unmarshal([]byte(doc), &want) != nil {
			topFields([]byte(doc), func([]byte, int, int) bool { return true }) // must not panic
			return
		}
		got := map[string]json.RawMessage{}
		ok := topFields([]byte(doc), func(k []byte, s, e int) bool {
			var key string
			if err := json.Unmarshal([]byte(`"`+string(k)+`"`), &key); err != nil {
				t.Fatalf("key %q does not decode: %v", k, err)
			}
			got[key] = json.RawMessage(doc[s:e])
			return true
		})
		if !ok || len(got) != len(want) {
			t.Fatalf("topFields(%q) walked %d members (ok %v), a decode finds %d", doc, len(got), ok, len(want))
		}
		for k, v := range want {
			var a, b any
			if json.Unmarshal(v, &a) != nil || json.Unmarshal(got[k], &b) != nil || !jsonEqual(a, b) {
				t.Fatalf("member %q: %s, a decode gives %s", k, got[k], v)
			}
		}
	})
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
