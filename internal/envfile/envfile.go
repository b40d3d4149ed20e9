// Package envfile reads a dotenv file of the failover command's settings
// (the OPENAI_* and FAILOVER_* variables of the environment) and watches it
// for changes, for `failover proxy -env-file` and any other command that
// takes one.
//
// The file is parsed by github.com/joho/godotenv, without touching the
// process environment: KEY=VALUE lines, "export " prefixes, # comments,
// single- and double-quoted values (double quotes expand \n and ${NAME} of
// a variable set earlier in the same file; single quotes keep the value as
// it is, which suits a value with a $). Errors name the file, the line and
// the variable, never a value, which may be a key.
package envfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/joho/godotenv"
)

// MaxSize is the largest file Load reads, in bytes.
const MaxSize = 1 << 20

// maxValueLines bounds how many lines a quoted value may span for the
// search of the line in error; a value still open after that many lines
// is reported as never closed.
const maxValueLines = 64

// Error is a problem in a dotenv file. It names the file, the line and,
// where the line names one, the variable; never a value. The zero value
// prints as a problem of an unnamed file.
type Error struct {
	// Path is the file as given.
	Path string
	// Line is the 1-based line of the problem, 0 for the file as a whole.
	Line int
	// Key is the variable assigned on Line, "" when the line has none or
	// its name is not a conventional one (which may be a pasted value).
	Key string
	// Problem says what is wrong.
	Problem string
}

// Error returns "envfile: <path>, line <n> (<key>): <problem>".
func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "envfile: %s", e.Path)
	if e.Line > 0 {
		fmt.Fprintf(&b, ", line %d", e.Line)
	}
	if e.Key != "" {
		fmt.Fprintf(&b, " (%s)", e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Problem)
	return b.String()
}

// Load reads the dotenv file at path and returns the process environment
// (os.Environ) with the file's variables set over it, as "KEY=VALUE"
// strings: a variable of the environment stays unless the file sets it.
// It never changes the process environment. Its error is an *[Error], or
// the error of opening or reading the file.
func Load(path string) ([]string, error) { return LoadOver(os.Environ(), path) }

// LoadOver is [Load] over environ, as os.Environ returns it, instead of
// the process environment. environ is not modified. The result holds
// environ's entries that the file does not set, in their order, then the
// file's, sorted by name.
func LoadOver(environ []string, path string) ([]string, error) {
	vars, err := Read(path)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(environ)+len(vars))
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if _, set := vars[k]; !set {
			out = append(out, kv)
		}
	}
	keys := make([]string, 0, len(vars))
	for k := range vars {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

// Read reads the dotenv file at path into a map of its variables. Its
// error is an *[Error], or the error of opening or reading the file.
func Read(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("envfile: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("envfile: %w", err)
	}
	if len(src) > MaxSize {
		return nil, &Error{Path: path, Problem: fmt.Sprintf("larger than %d KiB", MaxSize>>10)}
	}
	vars, err := parse(src)
	if err != nil {
		// godotenv's own error quotes the text near the problem, values
		// included: find the line instead.
		return nil, locate(path, src)
	}
	return vars, nil
}

// parse parses src, reporting as an error what godotenv silently takes
// for a variable with an empty name (a last line without "=").
func parse(src []byte) (map[string]string, error) {
	vars, err := godotenv.UnmarshalBytes(src)
	if err != nil {
		return nil, err
	}
	if _, ok := vars[""]; ok {
		return nil, errors.New("a line without a name")
	}
	return vars, nil
}

// assignment matches the start of a line that assigns a variable, as
// godotenv reads one; name is its first group.
var assignment = regexp.MustCompile(`^\s*(?:export\s+)?([A-Za-z0-9_.]+)\s*[=:]`)

// conventional matches the variable names an error may show: a value
// pasted by mistake where a name belongs is rarely all capitals.
var conventional = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// locate finds the line of the first problem of src, which godotenv
// refused, by parsing it statement by statement: a statement is one line,
// or several when a quoted value spans them.
func locate(path string, src []byte) error {
	lines := strings.Split(string(bytes.ReplaceAll(src, []byte("\r\n"), []byte("\n"))), "\n")
	for start := 0; start < len(lines); {
		end := start
		for ; end < len(lines) && end-start < maxValueLines; end++ {
			if _, err := parse([]byte(strings.Join(lines[start:end+1], "\n") + "\n")); err == nil {
				break
			}
		}
		if end == len(lines) || end-start == maxValueLines {
			return lineError(path, start+1, lines[start])
		}
		start = end + 1
	}
	return &Error{Path: path, Problem: "not a dotenv file godotenv can read"}
}

// lineError describes the problem of line, number n, which starts a
// statement that does not parse.
func lineError(path string, n int, line string) error {
	m := assignment.FindStringSubmatch(line)
	if m == nil {
		return &Error{Path: path, Line: n, Problem: "not a KEY=VALUE assignment (want, for example, OPENAI_API_KEY_1=sk-...)"}
	}
	e := &Error{Path: path, Line: n, Problem: "its value does not parse: a quote is never closed, or text follows the closing quote"}
	if conventional.MatchString(m[1]) {
		e.Key = m[1]
	}
	return e
}
