package envfile

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// waitLimit bounds every wait of the tests: generous, for slow shared
// machines. No assertion depends on timing.
const waitLimit = time.Minute

// testDebounce is the tests' debounce: longer than the default, so that
// a burst of events stays one burst even when a loaded machine stalls the
// writer between two of its system calls.
const testDebounce = time.Second

// watch starts a Watcher of path with testDebounce.
func watch(t *testing.T, path string) *Watcher {
	t.Helper()
	w, err := Watch(path, testDebounce)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() })
	return w
}

// waitReport waits for the watcher's report of what did.
func waitReport(t *testing.T, w *Watcher, did string) {
	t.Helper()
	select {
	case <-w.C:
	case <-time.After(waitLimit):
		t.Fatalf("no report within %v of: %s", waitLimit, did)
	}
}

// renameInto writes content to a new file beside path and renames it over
// path, as editors and atomic writers do.
func renameInto(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// configMap lays out dir as a Kubernetes ConfigMap volume does: the file
// proxy.env is a symlink to ..data/proxy.env, and ..data a symlink to a
// timestamped directory holding the content. It returns the path of
// proxy.env.
func configMap(t *testing.T, dir, content string) string {
	t.Helper()
	writeVersion(t, dir, "..v1", content)
	if err := os.Symlink("..v1", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "proxy.env")
	if err := os.Symlink(filepath.Join("..data", "proxy.env"), path); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeVersion writes a ConfigMap version: dir/version/proxy.env.
func writeVersion(t *testing.T, dir, version, content string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, version), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, version), "proxy.env", content)
}

// swapConfigMap updates a ConfigMap volume as the kubelet does: a new
// version, a new ..data symlink renamed over the old, the old version
// removed.
func swapConfigMap(t *testing.T, dir, from, to, content string) {
	t.Helper()
	writeVersion(t, dir, to, content)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(to, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, from)); err != nil {
		t.Fatal(err)
	}
}

// TestWatcherReportsEachChangeOnce makes each kind of change a file can
// see, one after the other, waiting for the report of each before the
// next; once the watcher is closed (its goroutine ended), no report may be
// left over: a burst of events made one report.
func TestWatcherReportsEachChangeOnce(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		path := writeFile(t, dir, "proxy.env", "A=0\n")
		w := watch(t, path)
		steps := []struct {
			name string
			do   func()
		}{
			{"a write in place", func() { writeFile(t, dir, "proxy.env", "A=1\n") }},
			{"an append", func() {
				f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := f.WriteString("B=2\n"); err != nil {
					t.Fatal(err)
				}
			}},
			{"a rename into place", func() { renameInto(t, path, "A=3\n") }},
			{"a removal and a new file", func() {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				writeFile(t, dir, "proxy.env", "A=4\n")
			}},
		}
		for _, s := range steps {
			s.do()
			waitReport(t, w, s.name)
		}
		checkNoLeftover(t, w)
	})

	t.Run("ConfigMap", func(t *testing.T) {
		dir := t.TempDir()
		path := configMap(t, dir, "A=1\n")
		w := watch(t, path)
		swapConfigMap(t, dir, "..v1", "..v2", "A=2\n")
		waitReport(t, w, "a ..data swap")
		swapConfigMap(t, dir, "..v2", "..v3", "A=3\n")
		waitReport(t, w, "a second ..data swap")
		checkNoLeftover(t, w)
		got, err := Read(path)
		if err != nil || got["A"] != "3" {
			t.Errorf("after the swaps the file reads %v, %v; want A=3", got, err)
		}
	})
}

// checkNoLeftover closes w, which waits for its goroutine to end, and
// checks that no report is left: every burst was reported once.
func checkNoLeftover(t *testing.T, w *Watcher) {
	t.Helper()
	if err := w.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case <-w.C:
		t.Error("a report was left over: a change was reported twice")
	default:
	}
	if err := w.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

// TestWatcherConcerns checks which events concern the file: its own, and
// any after which its path leads elsewhere; not other files'.
func TestWatcherConcerns(t *testing.T) {
	dir := t.TempDir()
	path := configMap(t, dir, "A=1\n")
	w := &Watcher{path: path, real: resolve(path)}
	ev := func(name string, op fsnotify.Op) fsnotify.Event {
		return fsnotify.Event{Name: filepath.Join(dir, name), Op: op}
	}
	if w.concerns(ev("other.env", fsnotify.Write)) {
		t.Error("a write of another file concerns the watcher")
	}
	if !w.concerns(ev("proxy.env", fsnotify.Chmod)) {
		t.Error("an event on the file's own path does not concern the watcher")
	}
	writeVersion(t, dir, "..v2", "A=2\n")
	if w.concerns(ev("..v2", fsnotify.Create)) {
		t.Error("a new version, before the swap, concerns the watcher")
	}
	if err := os.Symlink("..v2", filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if !w.concerns(ev("..data", fsnotify.Create)) {
		t.Error("the ..data swap does not concern the watcher")
	}
	if w.concerns(ev("..v1", fsnotify.Remove)) {
		t.Error("the removal of the old version, after the swap, concerns the watcher")
	}
}

func TestWatchMissingDirectory(t *testing.T) {
	if w, err := Watch(filepath.Join(t.TempDir(), "missing", "proxy.env"), 0); err == nil {
		_ = w.Close()
		t.Fatal("Watch of a file in a missing directory: no error")
	}
}
