package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// followPoll is how often a following Logs call looks for new lines.
const followPoll = 100 * time.Millisecond

// errLimit ends a Logs call at opts.LimitBytes.
var errLimit = errors.New("log limit reached")

// Logs writes a container's log to w like kubelet: the lines of the latest
// attempt (or with Previous the one before), without the CRI prefix unless
// Timestamps, filtered by SinceSeconds/SinceTime, the last TailLines of
// them, at most LimitBytes. With Follow it keeps writing new lines until the
// container exits or ctx ends.
func (r *Runtime) Logs(ctx context.Context, uid, ctrName string, opts *corev1.PodLogOptions, w io.Writer) error {
	if opts == nil {
		opts = &corev1.PodLogOptions{}
	}
	r.mu.Lock()
	p, ok := r.pods[uid]
	var c *container
	var podName string
	if ok {
		c = p.containers[ctrName]
		podName = p.rec.Name
	}
	var attempt int
	var done chan struct{}
	if c != nil {
		attempt, done = c.attempt, c.done
	}
	r.mu.Unlock()
	if podName == "" {
		podName = uid
	}
	if c == nil {
		return fmt.Errorf("runtime: container %q in pod %q is not available", ctrName, podName)
	}
	follow := opts.Follow
	if opts.Previous {
		attempt--
		follow = false
	}
	path := attemptFile(c.dir, attempt, ".log")
	f, err := os.Open(path)
	if opts.Previous && (attempt < 0 || err != nil) {
		return fmt.Errorf("previous terminated container %q in pod %q not found", ctrName, podName)
	}
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // nothing logged (yet)
		}
		return fmt.Errorf("runtime: %w", err)
	}
	defer f.Close()

	var since time.Time
	switch {
	case opts.SinceTime != nil:
		since = opts.SinceTime.Time
	case opts.SinceSeconds != nil:
		since = time.Now().Add(-time.Duration(*opts.SinceSeconds) * time.Second)
	}
	out := w
	if opts.LimitBytes != nil {
		out = &limitWriter{w: w, left: *opts.LimitBytes}
	}
	if opts.TailLines != nil {
		off, err := tailOffset(f, *opts.TailLines, since)
		if err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("runtime: %w", err)
		}
	}

	br := bufio.NewReader(f)
	var partial []byte // an incomplete last line, completed by a later read
	exited := false
	for {
		chunk, err := br.ReadBytes('\n')
		if err == nil {
			line := append(partial, chunk...)
			partial = nil
			if werr := writeRecord(out, line, since, opts.Timestamps); werr != nil {
				if errors.Is(werr, errLimit) {
					return nil
				}
				return werr
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("runtime: %w", err)
		}
		partial = append(partial, chunk...)
		if !follow || exited {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-done:
			// The shim wrote the whole log before the exit record: one
			// more pass reads the rest.
			exited = true
		case <-time.After(followPoll):
		}
	}
}

// writeRecord writes the text of one CRI record (with its newline unless
// partial), or nothing if it is older than since or malformed.
func writeRecord(w io.Writer, line []byte, since time.Time, timestamps bool) error {
	line = bytes.TrimSuffix(line, []byte("\n"))
	ts, rest, ok := bytes.Cut(line, []byte(" "))
	if !ok {
		return nil
	}
	_, rest, ok = bytes.Cut(rest, []byte(" ")) // stream
	if !ok {
		return nil
	}
	tag, text, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		tag, text = rest, nil
	}
	if !since.IsZero() {
		t, err := time.Parse(time.RFC3339Nano, string(ts))
		if err == nil && t.Before(since) {
			return nil
		}
	}
	var buf []byte
	if timestamps {
		buf = append(append(buf, ts...), ' ')
	}
	buf = append(buf, text...)
	if string(tag) != "P" {
		buf = append(buf, '\n')
	}
	_, err := w.Write(buf)
	return err
}

// tailOffset returns the offset of the n-th last complete record of f not
// older than since (0 with fewer records).
func tailOffset(f *os.File, n int64, since time.Time) (int64, error) {
	if n < 0 {
		return 0, nil
	}
	var offs []int64 // ring of record starts
	br := bufio.NewReader(f)
	var off int64
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			break
		}
		start := off
		off += int64(len(line))
		if !since.IsZero() {
			ts, _, _ := bytes.Cut(line, []byte(" "))
			if t, err := time.Parse(time.RFC3339Nano, string(ts)); err == nil && t.Before(since) {
				continue
			}
		}
		if n == 0 {
			continue
		}
		if int64(len(offs)) == n {
			offs = offs[1:]
		}
		offs = append(offs, start)
	}
	if n == 0 || len(offs) == 0 {
		return off, nil
	}
	return offs[0], nil
}

// limitWriter writes at most left bytes, then returns errLimit.
type limitWriter struct {
	w    io.Writer
	left int64
}

func (l *limitWriter) Write(b []byte) (int, error) {
	if l.left <= 0 {
		return 0, errLimit
	}
	if int64(len(b)) > l.left {
		n, err := l.w.Write(b[:l.left])
		l.left = 0
		if err != nil {
			return n, err
		}
		return n, errLimit
	}
	n, err := l.w.Write(b)
	l.left -= int64(n)
	return n, err
}
