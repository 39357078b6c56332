package notify_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/credgw/credgw/activation/notify"
	"github.com/credgw/credgw/store"
)

// NotificationFailed: an attempt that failed is counted.
func (c *claimStore) NotificationFailed(context.Context, store.Notification, string, time.Time) error {
	c.mu.Lock()
	c.failed++
	c.mu.Unlock()
	return nil
}

// hand gives what was enqueued to the next delivery run
// (a claim counts an attempt, as the store's does).
func (c *claimStore) hand() {
	for _, n := range c.enqueued {
		n.Attempts++
		c.due = append(c.due, n)
	}
	c.enqueued = nil
}

// TestFileSender: notifications.file appends each notification as one JSON
// line to a file only the gateway's user reads (an agency's own mailer or
// log pipeline takes them from there; the demo shows them). A symbolic link
// in its place is not followed, and a file others may read is refused.
func TestFileSender(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := &claimStore{}
	o, err := notify.New(notify.Config{File: "notifications.jsonl"}, func(p string) string { return filepath.Join(dir, p) }, st, discard(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !o.Enabled() {
		t.Fatal("a file is configured but Enabled() is false")
	}
	o.Set(ctx, "binding", "set-1", "Derived PIV credentials were installed", "A device installed them.")
	o.Set(ctx, "revocation", "set-1", "Revoked", "They were revoked.\nLine two.")
	st.hand()
	if sent, failed, err := o.Deliver(ctx); sent != 2 || failed != 0 || err != nil {
		t.Fatalf("Deliver = %d, %d, %v", sent, failed, err)
	}
	path := filepath.Join(dir, "notifications.jsonl")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the file: %v, %v; want mode 0600", fi, err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []map[string]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]string
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || lines[0]["kind"] != "binding" || lines[0]["recipient"] != "holder@example.com" || lines[1]["kind"] != "revocation" ||
		!strings.Contains(lines[1]["body"], "Line two.") || lines[0]["id"] == "" || lines[0]["created_at"] == "" {
		t.Fatalf("lines %v", lines)
	}

	// What is put at the path after the start (by someone else, or by
	// logrotate's "create 0644") is not written to: the delivery fails.
	refusedAfterStart := func(t *testing.T, name string, put func(path string) error) string {
		t.Helper()
		path := filepath.Join(dir, name)
		st := &claimStore{}
		o, err := notify.New(notify.Config{File: path}, func(p string) string { return p }, st, discard(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := put(path); err != nil {
			t.Fatal(err)
		}
		o.Set(ctx, "binding", "set-1", "s", "b")
		st.hand()
		if sent, failed, _ := o.Deliver(ctx); sent != 0 || failed != 1 {
			t.Fatalf("%s: sent %d, failed %d", name, sent, failed)
		}
		return path
	}
	t.Run("a symbolic link in its place", func(t *testing.T) {
		target := filepath.Join(dir, "elsewhere")
		link := refusedAfterStart(t, "link.jsonl", func(path string) error { return os.Symlink(target, path) })
		// One there before the start is refused then.
		if _, err := notify.New(notify.Config{File: link}, func(p string) string { return p }, &claimStore{}, discard(), nil); err == nil ||
			!strings.HasPrefix(err.Error(), "notifications.file: ") {
			t.Fatalf("New with a link in place: %v", err)
		}
		if _, err := os.Stat(target); err == nil {
			t.Fatal("the link was followed")
		}
	})
	t.Run("a file others may read, made after the start", func(t *testing.T) {
		path := refusedAfterStart(t, "later.jsonl", func(path string) error {
			if err := os.WriteFile(path, nil, 0o666); err != nil {
				return err
			}
			return os.Chmod(path, 0o666)
		})
		if b, _ := os.ReadFile(path); len(b) != 0 {
			t.Fatalf("written into a file others may read: %q", b)
		}
	})
	// Opened for writing, a FIFO with no reader would block the delivery
	// loop for good.
	t.Run("a FIFO in its place", func(t *testing.T) {
		refusedAfterStart(t, "fifo.jsonl", func(path string) error { return syscall.Mkfifo(path, 0o600) })
	})
	t.Run("a file others may read", func(t *testing.T) {
		shared := filepath.Join(dir, "shared.jsonl")
		if err := os.WriteFile(shared, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := notify.New(notify.Config{File: shared}, func(p string) string { return p }, &claimStore{}, discard(), nil)
		if err == nil || !strings.HasPrefix(err.Error(), "notifications.file: ") {
			t.Fatalf("New: %v, want an error naming notifications.file", err)
		}
	})
}
