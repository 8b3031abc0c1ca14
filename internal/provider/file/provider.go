package file

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"trellis.dev/trellis/internal/translate"
)

// DefaultDebounce is how long the directory must stay unchanged before it is
// read again. A save by an editor, or a file renamed over another, makes its
// events within a millisecond or two, and a tool writing many files makes
// them back to back: 10 ms gathers either into one reading, and costs a
// single change no more than that. A file caught mid-write by a reading is
// not trusted on that account alone (SettlePeriod).
const DefaultDebounce = 10 * time.Millisecond

// DefaultMaxDelay is how long after the first change of a burst the
// directory is read at the latest, however often it keeps changing, when
// Provider.MaxDelay is zero: a file rewritten without pause (a log written
// into the directory by mistake) delays the others' changes by at most this
// much.
const DefaultMaxDelay = 250 * time.Millisecond

// DefaultSettlePeriod is how long a config file must stay unchanged before a
// change that looks like a partial write of it is applied, when
// Provider.SettlePeriod is zero.
const DefaultSettlePeriod = 5 * time.Second

// DefaultReadTimeout is how long reading the directory may take when
// Provider.ReadTimeout is zero.
const DefaultReadTimeout = 10 * time.Second

// DefaultCluster owns what the provider translates when Provider.Cluster is
// empty.
const DefaultCluster = "local"

// Retry delays after a failed apply: doubling from the first to the last.
const (
	retryFirst = time.Second
	retryLast  = 30 * time.Second
)

// Provider watches a directory of YAML files and applies their translation
// each time it changes. A configuration that fails to load or translates
// with problems is logged and not applied, so the last good one stays in
// force. The zero value of every field but Dir works.
//
// A file rewritten in place is empty, then holds a growing prefix of its new
// content, until its writer is done. So that such a moment is not applied as
// a deletion, a change to a file that still exists and that would remove
// what the file defined is applied only once the file has stayed unchanged
// for SettlePeriod; until then what the file last defined stays in force.
// Such a change is one that leaves the file defining nothing, cuts it to a
// prefix of its applied content, or takes away an AuthPolicy or Gateway
// defined in no other file, a Gateway's listener, or an AuthPolicy's target
// or statement. Deleting the file applies at once. A config file that cannot
// be read (not a regular file or a link to one, or over MaxFileSize) is
// logged and keeps what it last defined; the other files still apply.
type Provider struct {
	// Dir is the directory read (see Load for which files).
	Dir string
	// Cluster owns every translated object; DefaultCluster when empty.
	Cluster string
	// Logger receives one record per error or problem; slog.Default() when nil.
	Logger *slog.Logger
	// Debounce is how long changes must settle before the directory is read
	// again; DefaultDebounce when zero.
	Debounce time.Duration
	// MaxDelay bounds how long the directory is left unread after a change
	// while changes keep coming; when zero, DefaultMaxDelay or Debounce,
	// whichever is longer.
	MaxDelay time.Duration
	// SettlePeriod is how long a file must stay unchanged before a change
	// that would remove what it defined applies (see above);
	// DefaultSettlePeriod when zero.
	SettlePeriod time.Duration
	// MaxFileSize is the largest config file read, in bytes;
	// DefaultMaxFileSize when zero.
	MaxFileSize int64
	// ReadTimeout bounds how long an attempt waits for the directory to be
	// read before it reports the file system as not answering and tries
	// again later; DefaultReadTimeout when zero.
	ReadTimeout time.Duration
	// OnResult, if set, is called after every attempt to load, translate and
	// apply, with nil when the result was applied. It runs on Run's goroutine.
	OnResult func(err error)
	// OnChange, if set, is called when Run sees the first event of a
	// change to the directory, before it waits for the change to settle
	// and reads it, so that a proxy in the same process can make room
	// for it (runner.CheckHold). It runs on Run's goroutine.
	OnChange func()

	mu      sync.Mutex
	lastErr error

	// Run's own state.
	files   map[string]*fileState  // by path
	applied map[objectKey]location // the objects last applied, with their files
	listing chan listing           // the read under way, if one is late
	// parsed keeps the decoded entries of the file contents the last read
	// used, so that a change decodes only the files that changed.
	parsed map[parseKey]parsedFile
	// docs keeps the decoded documents of each file's content last
	// decoded, by path, so that a file's change decodes only the
	// documents that changed.
	docs map[string]map[docKey]parsedDoc
	// readDir, if set, replaces the package's readDir (for tests).
	readDir func(dir string, limit int64) ([]fileData, error)
	// listed are the files of the last listing, by path: a file whose stat
	// has not changed is not read again.
	listed map[string]fileData
	// lastWhere and lastOrder are the index and the objects, in order,
	// of the last reading made in full (nil order when it held objects).
	lastWhere map[objectKey]location
	lastOrder []placed
	// lists are the Input lists of the objects of lastOrder (nil when
	// lastOrder is).
	lists *inputLists
	// indexes counts the indexes made; lastIndex and appliedIndex number
	// lastWhere and applied.
	indexes, lastIndex, appliedIndex int
	// translator translates each reading, re-translating only what
	// depends on the objects that changed.
	translator translate.Incremental
}

// fileState is what Run knows of one config file.
type fileState struct {
	// applied is the content last applied; nil before any was.
	applied []byte
	// seen is the hash of the content last read, first read at seenAt.
	seen   [sha256.Size]byte
	seenAt time.Time
}

// ProblemsError reports that the configuration translated with problems and
// so was not applied. Each problem's Object.File names the file its object
// came from.
type ProblemsError struct {
	Problems []translate.Problem
}

func (e *ProblemsError) Error() string {
	lines := make([]string, 1, 1+len(e.Problems))
	lines[0] = fmt.Sprintf("configuration not applied: %d problem(s)", len(e.Problems))
	for _, p := range e.Problems {
		lines = append(lines, p.String())
	}
	return strings.Join(lines, "\n")
}

// LastError returns the outcome of the latest attempt: nil if it was
// applied, else why not (a load error, a *ProblemsError, or an apply error).
func (p *Provider) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Run reads and applies the directory, then again after every change to it,
// until ctx is done, when it returns nil. It returns an error only if the
// directory cannot be watched. apply receives each good translation; if it
// fails, Run logs the error and tries again after a delay growing from 1s to
// 30s, or at the next change, whichever comes first. While a file settles
// (see Provider), Run reads the directory again when its settle period ends.
// The directory itself
// must stay: if it is removed, Run reports the load error and stops seeing
// changes, keeping the last good configuration.
func (p *Provider) Run(ctx context.Context, apply func(ctx context.Context, out *translate.Output) error) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", p.Dir, err)
	}
	defer w.Close()
	// Watch the directory, not the files: editors and ConfigMap volumes
	// replace files by renaming over them, which a watch on a file misses.
	// Watching before the first read means no change is missed.
	if err := w.Add(p.Dir); err != nil {
		return fmt.Errorf("watch %s: %w", p.Dir, err)
	}
	debounce := cmp.Or(p.Debounce, DefaultDebounce)
	maxDelay := cmp.Or(p.MaxDelay, max(DefaultMaxDelay, debounce))
	// first is when the first change not yet read came; zero when none.
	var first time.Time
	settled := time.NewTimer(0)        // the first attempt
	retry := time.NewTimer(retryFirst) // runs only after a failed apply
	retry.Stop()
	retryDelay := retryFirst
	settleEnd := time.NewTimer(time.Hour) // runs only while a file settles
	settleEnd.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if p.relevant(ev) {
				now := time.Now()
				if first.IsZero() {
					first = now
					if p.OnChange != nil {
						p.OnChange()
					}
				}
				settled.Reset(min(debounce, first.Add(maxDelay).Sub(now)))
			}
			continue
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			p.logger().Error("watching config directory", "dir", p.Dir, "err", err)
			continue
		case <-settled.C:
		case <-retry.C:
		case <-settleEnd.C:
		}
		if ctx.Err() != nil {
			return nil
		}
		first = time.Time{}
		again, wake := p.attempt(ctx, apply)
		settleEnd.Stop()
		if !wake.IsZero() {
			settleEnd.Reset(time.Until(wake))
		}
		if !again {
			retry.Stop()
			retryDelay = retryFirst
			continue
		}
		retry.Reset(retryDelay)
		retryDelay = min(2*retryDelay, retryLast)
	}
}

// relevant reports whether ev may change what Load reads: a change to a
// config file, to a ConfigMap volume's "..data" link, or to the directory.
func (p *Provider) relevant(ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	name := filepath.Base(ev.Name)
	return isConfigFile(name) || strings.HasPrefix(name, "..") || filepath.Clean(ev.Name) == filepath.Clean(p.Dir)
}

// attempt loads, translates and, if both succeed, applies the directory,
// recording and reporting the outcome. It reports whether the attempt is
// worth retrying without a change (apply failed, or the file system did not
// answer in time), and when a file that is settling should be read again
// (zero if none is).
func (p *Provider) attempt(ctx context.Context, apply func(context.Context, *translate.Output) error) (retry bool, wake time.Time) {
	start := time.Now()
	log := p.logger()
	r, err := p.read(ctx, start)
	if ctx.Err() != nil {
		return false, time.Time{}
	}
	retry = errors.Is(err, errNoAnswer)
	var out *translate.Output
	if err == nil {
		wake = r.wake
		out, err = translateConfig(&p.translator, r.config, cmp.Or(p.Cluster, DefaultCluster))
	}
	if err == nil {
		if err = apply(ctx, out); err != nil {
			err = fmt.Errorf("apply configuration from %s: %w", p.Dir, err)
			retry = ctx.Err() == nil
		} else {
			p.translator.Acknowledge()
			p.commit(r)
		}
	}
	var problems *ProblemsError
	switch {
	case err == nil:
		log.Info("configuration applied", "dir", p.Dir, "networks", len(out.Networks), "services", len(out.Services),
			"targetGroups", len(out.TargetGroups), "certificates", len(out.Certificates), "workloadSets", len(out.WorkloadSets), "took", time.Since(start))
	case errors.As(err, &problems):
		for _, pr := range problems.Problems {
			log.Error("configuration problem", "file", pr.Object.File, "object", pr.Object.Kind+" "+objectName(pr.Object.Namespace, pr.Object.Name),
				"field", pr.Field, "reason", pr.Reason, "message", pr.Message)
		}
		log.Error("configuration not applied; the last good one stays in force", "dir", p.Dir, "problems", len(problems.Problems))
	default:
		for _, e := range unjoin(err) {
			log.Error("configuration error", "err", e)
		}
		log.Error("configuration not applied; the last good one stays in force", "dir", p.Dir)
	}
	p.mu.Lock()
	p.lastErr = err
	p.mu.Unlock()
	if p.OnResult != nil {
		p.OnResult(err)
	}
	return retry, wake
}

// errNoAnswer reports that reading the directory took over ReadTimeout.
var errNoAnswer = errors.New("no answer from the file system")

// listing is the outcome of one readDir.
type listing struct {
	files []fileData
	err   error
}

// readFiles reads the config files apart from Run, so that a file system
// that stops answering (a hung network mount) delays the configuration but
// never Run's return. After ReadTimeout it fails with errNoAnswer; the read
// goes on, and the next call waits for it rather than starting another.
func (p *Provider) readFiles(ctx context.Context) ([]fileData, error) {
	if p.listing == nil {
		ch := make(chan listing, 1)
		dir, limit, read := p.Dir, cmp.Or(p.MaxFileSize, DefaultMaxFileSize), p.readDir
		if read == nil {
			prev := p.listed
			read = func(dir string, limit int64) ([]fileData, error) { return readDirCached(dir, limit, prev) }
		}
		go func() {
			files, err := read(dir, limit)
			ch <- listing{files, err}
		}()
		p.listing = ch
	}
	timeout := time.NewTimer(cmp.Or(p.ReadTimeout, DefaultReadTimeout))
	defer timeout.Stop()
	select {
	case l := <-p.listing:
		p.listing = nil
		if l.err == nil {
			p.listed = make(map[string]fileData, len(l.files))
			for _, f := range l.files {
				p.listed[f.path] = f
			}
		}
		return l.files, l.err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timeout.C:
		return nil, fmt.Errorf("read config directory %s: %w within %v", p.Dir, errNoAnswer, cmp.Or(p.ReadTimeout, DefaultReadTimeout))
	}
}

// translateConfig translates c for cluster with x. It fails with a
// *ProblemsError naming each problem's file.
func translateConfig(x *translate.Incremental, c *config, cluster string) (*translate.Output, error) {
	c.input.Cluster = cluster
	out := x.Translate(&c.input)
	if len(out.Problems) > 0 {
		problems := make([]translate.Problem, len(out.Problems))
		for i, pr := range out.Problems {
			pr.Object.File = c.where[objectKey{pr.Object.Kind, pr.Object.Namespace, pr.Object.Name}].file
			problems[i] = pr
		}
		return nil, &ProblemsError{Problems: problems}
	}
	return out, nil
}

func (p *Provider) logger() *slog.Logger {
	if p.Logger != nil {
		return p.Logger
	}
	return slog.Default()
}

// unjoin returns the errors joined in err, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
