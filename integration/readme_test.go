package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// readmeBlock is a Go code block of the README.
type readmeBlock struct {
	line int // of its first line of code
	code string
}

// readmeGoBlocks returns the ```go blocks of the README at path.
func readmeGoBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks []readmeBlock
		cur    *readmeBlock
		n      int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &readmeBlock{line: n + 1}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.code += line + "\n"
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s: the Go block of line %d is not closed", path, cur.line)
	}
	return blocks
}

// TestREADMESnippetsCompile extracts the README's Go snippets and builds
// them against this module's dependencies, so that they cannot drift from
// the API: every snippet shows its imports, and either starts with
// "package" (a program of its own) or with "import" (declarations, built
// together in one package, each snippet its own file). The build reads
// modules from the module cache only (GOPROXY=off).
func TestREADMESnippetsCompile(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	readme, err := filepath.Abs(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeGoBlocks(t, readme)
	if len(blocks) < 5 {
		t.Fatalf("%d Go blocks in %s, want at least 5: is the extraction broken?", len(blocks), readme)
	}
	if data, err := os.ReadFile(readme); err != nil || !strings.Contains(string(data), "go get github.com/failover-go/failover") {
		t.Errorf("the README does not show `go get github.com/failover-go/failover` (%v)", err)
	}

	// The snippets go into packages under a directory of this module that
	// exists only in the build's overlay, never on disk.
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	virtual := filepath.Join(here, "readme_snippets")
	overlay := map[string]string{}
	dir := t.TempDir()
	pkgs := map[string]bool{}
	for _, b := range blocks {
		first := firstCodeLine(b.code)
		// A line directive makes the compiler's errors name the
		// README's own lines.
		lineDirective := fmt.Sprintf("//line %s:%d\n", readme, b.line)
		var pkg, code string
		switch {
		case strings.HasPrefix(first, "package "):
			pkg, code = fmt.Sprintf("main_line_%d", b.line), lineDirective+b.code
		case strings.HasPrefix(first, "import"):
			pkg, code = "decls", "package decls\n"+lineDirective+b.code
		default:
			t.Errorf("README line %d: a Go snippet that starts with neither package nor import (%q): show its imports", b.line, first)
			continue
		}
		file := filepath.Join(dir, fmt.Sprintf("readme_line_%d.go", b.line))
		if err := os.WriteFile(file, []byte(code), 0o644); err != nil {
			t.Fatal(err)
		}
		overlay[filepath.Join(virtual, pkg, filepath.Base(file))] = file
		pkgs["./readme_snippets/"+pkg] = true
	}
	overlayJSON, err := json.Marshal(map[string]any{"Replace": overlay})
	if err != nil {
		t.Fatal(err)
	}
	overlayFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayFile, overlayJSON, 0o644); err != nil {
		t.Fatal(err)
	}

	args := []string{"build", "-overlay", overlayFile}
	if raceEnabled {
		args = append(args, "-race") // reuses what the test build compiled
	}
	for p := range pkgs {
		args = append(args, p)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOWORK=off", "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly -buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's Go snippets do not build: %v\n%s", err, out)
	}
	t.Logf("built %d snippets in %d packages", len(blocks), len(pkgs))
}

// firstCodeLine returns the first line of code that is neither blank nor
// a comment.
func firstCodeLine(code string) string {
	for line := range strings.SplitSeq(code, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "//") {
			return line
		}
	}
	return ""
}
