package nodeagent

import (
	"bytes"
	"sync"
	"time"
)

// Log is one container's stdout: timestamped lines kept in memory, the
// oldest dropped beyond maxLogLines. It is safe for concurrent use.
type Log struct {
	mu      sync.Mutex
	lines   []logLine
	dropped int           // lines dropped from the front so far
	partial []byte        // an unterminated last line
	changed chan struct{} // closed and replaced on every new line
}

type logLine struct {
	at   time.Time
	text string
}

const maxLogLines = 20000

func newLog() *Log { return &Log{changed: make(chan struct{})} }

// Write appends output; each complete line is stamped with the time its
// newline arrived.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	data := append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, logLine{at: now, text: string(data[:i])})
		data = data[i+1:]
		added = true
	}
	l.partial = append([]byte(nil), data...)
	if over := len(l.lines) - maxLogLines; over > 0 {
		l.lines = append([]logLine(nil), l.lines[over:]...)
		l.dropped += over
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// logQuery selects lines as the kubelet's container log options do.
type logQuery struct {
	since      time.Time // lines at or after; zero: all
	tail       int       // last N lines; negative: all
	timestamps bool      // prefix each line with its RFC 3339 time
	limitBytes int64     // stop after this many bytes; 0: no limit
}

// read returns the lines the query selects from line number from on
// (counting every line ever written), formatted; the number to continue
// from when following; and a channel closed when more lines arrive.
func (l *Log) read(q logQuery, from int) (out []byte, next int, more <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sel := l.lines[min(max(from-l.dropped, 0), len(l.lines)):]
	if q.tail >= 0 && len(sel) > q.tail {
		sel = sel[len(sel)-q.tail:]
	}
	var buf bytes.Buffer
	for _, ln := range sel {
		if !q.since.IsZero() && ln.at.Before(q.since) {
			continue
		}
		if q.timestamps {
			buf.WriteString(ln.at.UTC().Format(time.RFC3339Nano))
			buf.WriteByte(' ')
		}
		buf.WriteString(ln.text)
		buf.WriteByte('\n')
	}
	return buf.Bytes(), l.dropped + len(l.lines), l.changed
}

// String returns the whole log, for tests and failure reports.
func (l *Log) String() string {
	b, _, _ := l.read(logQuery{tail: -1}, 0)
	return string(b)
}
