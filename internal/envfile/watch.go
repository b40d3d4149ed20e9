package envfile

import (
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long a [Watcher] waits after the last event of a
// burst before it reports the change: an editor's save or a Kubernetes
// volume update makes several events within milliseconds.
const DefaultDebounce = 200 * time.Millisecond

// Watcher reports the changes of one file. It watches the file's
// directory, not the file, so that each of these counts: a write in place;
// an editor's rename into place (a new file renamed over the old, which
// ends any watch of the old file); and the swap of a symlink on the way to
// the file (a Kubernetes ConfigMap volume renames a new "..data" symlink
// over the old one, while the file's own path, a symlink into "..data",
// does not change). Events for other files of the directory are ignored.
// A change of the file's target in another directory, seen through a
// symlink that does not change, is not seen. Create a Watcher with
// [Watch] (the zero value is not usable); stop it with [Watcher.Close].
type Watcher struct {
	// C receives a value once a burst of changes has been quiet for the
	// debounce period. Its buffer holds one value: changes made while the
	// receiver is busy are reported once. An error of the underlying
	// watcher (such as events lost to an overflow) counts as a change, so
	// that the file is read again.
	C <-chan struct{}

	c        chan struct{}
	path     string // absolute
	real     string // the file's resolved path when last seen; "" if none
	debounce time.Duration
	fw       *fsnotify.Watcher
	stop     chan struct{}
	done     chan struct{} // closed when run returns
	once     sync.Once
	closeErr error
}

// Watch starts watching the file at path; the file need not exist yet, but
// its directory must. debounce is how long a burst of events must be quiet
// before it is reported; zero means [DefaultDebounce].
func Watch(path string, debounce time.Duration) (*Watcher, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("envfile: %w", err)
	}
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("envfile: watching %s: %w", path, err)
	}
	if err := fw.Add(filepath.Dir(abs)); err != nil {
		_ = fw.Close()
		return nil, fmt.Errorf("envfile: watching the directory of %s: %w", path, err)
	}
	c := make(chan struct{}, 1)
	w := &Watcher{
		C:        c,
		c:        c,
		path:     abs,
		real:     resolve(abs),
		debounce: debounce,
		fw:       fw,
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go w.run()
	return w, nil
}

// Close stops the watcher and waits until its goroutine has ended. Later
// calls return the first call's result.
func (w *Watcher) Close() error {
	w.once.Do(func() {
		close(w.stop)
		w.closeErr = w.fw.Close()
		<-w.done
	})
	return w.closeErr
}

// run turns the directory's events into debounced reports on C.
func (w *Watcher) run() {
	defer close(w.done)
	timer := time.NewTimer(w.debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-w.stop:
			return
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			if !w.concerns(ev) {
				continue
			}
		case _, ok := <-w.fw.Errors:
			if !ok {
				return
			}
		case <-timer.C:
			select {
			case w.c <- struct{}{}:
			default: // a report is already waiting
			}
			continue
		}
		timer.Reset(w.debounce)
	}
}

// concerns reports whether ev may have changed the file: an event on its
// path, or any event after which its path resolves elsewhere (a symlink on
// the way was swapped).
func (w *Watcher) concerns(ev fsnotify.Event) bool {
	real := resolve(w.path)
	moved := real != w.real
	w.real = real
	return filepath.Clean(ev.Name) == w.path || moved
}

// resolve returns path with every symlink resolved, or "" when it does not
// resolve (the file is missing).
func resolve(path string) string {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return ""
	}
	return real
}
