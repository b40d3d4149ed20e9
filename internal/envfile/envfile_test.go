package envfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// writeFile writes content to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadOver checks the merge: the file's variables override the
// environment's, the environment's others stay, in order, and the file's
// follow, sorted; the input is not modified.
func TestLoadOver(t *testing.T) {
	path := writeFile(t, t.TempDir(), "proxy.env", `# endpoints
OPENAI_API_KEY_1=sk-from-file
export OPENAI_NAME_2='second'
OPENAI_BASE_URL_2="http://127.0.0.1:9000/v1"   # a comment
OPENAI_PRIORITY_2 = 7
`)
	environ := []string{"PATH=/bin", "OPENAI_API_KEY_1=sk-from-env", "OPENAI_NAME_1=first", "NOEQUALS"}
	in := slices.Clone(environ)
	got, err := LoadOver(environ, path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"PATH=/bin", "OPENAI_NAME_1=first", "NOEQUALS",
		"OPENAI_API_KEY_1=sk-from-file",
		"OPENAI_BASE_URL_2=http://127.0.0.1:9000/v1",
		"OPENAI_NAME_2=second",
		"OPENAI_PRIORITY_2=7",
	}
	if !slices.Equal(got, want) {
		t.Errorf("LoadOver =\n%q\nwant\n%q", got, want)
	}
	if !slices.Equal(environ, in) {
		t.Errorf("LoadOver modified its input: %q", environ)
	}
}

// TestLoad checks that Load reads over the process environment and never
// changes it.
func TestLoad(t *testing.T) {
	t.Setenv("ENVFILE_TEST_FROM_ENV", "env")
	t.Setenv("ENVFILE_TEST_BOTH", "env")
	path := writeFile(t, t.TempDir(), "proxy.env", "ENVFILE_TEST_BOTH=file\nENVFILE_TEST_FROM_FILE=file\n")
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ENVFILE_TEST_FROM_ENV=env", "ENVFILE_TEST_BOTH=file", "ENVFILE_TEST_FROM_FILE=file"} {
		if !slices.Contains(got, want) {
			t.Errorf("Load lacks %q", want)
		}
	}
	if slices.Contains(got, "ENVFILE_TEST_BOTH=env") {
		t.Error("Load kept the environment's value of a variable the file sets")
	}
	if v, set := os.LookupEnv("ENVFILE_TEST_FROM_FILE"); set || os.Getenv("ENVFILE_TEST_BOTH") != "env" {
		t.Errorf("Load changed the process environment (ENVFILE_TEST_FROM_FILE=%q)", v)
	}
}

// TestReadValues pins the dotenv forms the README promises.
func TestReadValues(t *testing.T) {
	path := writeFile(t, t.TempDir(), "proxy.env", `A=plain value
B="double ${A} quoted\n"
C='single ${A} $quoted'
export D=exported
E=
F="multi
line"
G=x # comment
H=sk-abc#not-a-comment
`)
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"A": "plain value",
		"B": "double plain value quoted\n",
		"C": "single ${A} $quoted",
		"D": "exported",
		"E": "",
		"F": "multi\nline",
		"G": "x",
		"H": "sk-abc#not-a-comment",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
}

// TestReadErrors checks that a file that does not parse gets an error
// naming the file, the line and (where it is a conventional name) the
// variable, and never the text of a value.
func TestReadErrors(t *testing.T) {
	const secret = "sk-secret-value-123"
	for _, tc := range []struct {
		name    string
		content string
		line    int
		key     string
	}{
		{"value without a name", "OPENAI_API_KEY_1=ok\n" + secret + "\n", 2, ""},
		{"space instead of =", "# comment\n\nOPENAI_API_KEY_1 " + secret + "\n", 3, ""},
		{"last line without =", "A=1\n" + secret, 2, ""},
		{"unclosed double quote", "A=1\nOPENAI_API_KEY_2=\"" + secret + "\nB=2\n", 2, "OPENAI_API_KEY_2"},
		{"unclosed single quote", "OPENAI_API_KEY_1='" + secret + "\n", 1, "OPENAI_API_KEY_1"},
		{"text after the quote", "OPENAI_API_KEY_1='" + secret + "'trailing\n", 1, "OPENAI_API_KEY_1"},
		{"after a multi-line value", "A=\"one\ntwo\nthree\"\nB=ok\n" + secret + "\n", 5, ""},
		{"a name that may be a value", "skSecretValue123=\"x\n", 1, ""},
		{"CRLF", "A=1\r\n" + secret + "\r\n", 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, t.TempDir(), "proxy.env", tc.content)
			_, err := Read(path)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want an *Error", err)
			}
			if e.Path != path || e.Line != tc.line || e.Key != tc.key {
				t.Errorf("error at %s line %d (%q), want line %d (%q)", e.Path, e.Line, e.Key, tc.line, tc.key)
			}
			msg := err.Error()
			for _, secretPart := range []string{secret, "skSecretValue123", "trailing"} {
				if strings.Contains(msg, secretPart) {
					t.Errorf("the error shows %q: %s", secretPart, msg)
				}
			}
			if !strings.Contains(msg, path) || !strings.Contains(msg, "line ") {
				t.Errorf("the error %q does not name the file and line", msg)
			}
		})
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Read(filepath.Join(dir, "missing.env")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: error %v, want fs.ErrNotExist", err)
	}
	big := writeFile(t, dir, "big.env", "A="+strings.Repeat("x", MaxSize)+"\n")
	var e *Error
	if _, err := Read(big); !errors.As(err, &e) || !strings.Contains(e.Problem, "larger than") {
		t.Errorf("a file over MaxSize: error %v, want one saying it is too large", err)
	}
}
