package notify

import (
	"bytes"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/credgw/credgw/store"
)

// TestMessageHeaders: a notification is a well-formed RFC 5322 / MIME
// message: Date, Message-ID, MIME headers, an encoded non-ASCII subject,
// a quoted-printable body that decodes to the text, and no header
// injection.
func TestMessageHeaders(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	body := "Your derived PIV credentials were revoked — at your request.\n" + strings.Repeat("long line ", 20) + "\nBye."
	n := store.Notification{ID: "n-42_x", Kind: "revocation", Recipient: "josé@example.com",
		Subject: "Révocation: credentials revoked\r\nBcc: mallory@example.com", Body: body}
	raw := message("credgw@agency.example", n, now)
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	h := msg.Header
	if d, err := h.Date(); err != nil || !d.Equal(now) {
		t.Errorf("Date %q: %v", h.Get("Date"), err)
	}
	for name, want := range map[string]string{
		"Message-Id": "<n-42_x@agency.example>", "Mime-Version": "1.0", "Content-Type": "text/plain; charset=utf-8",
		"Content-Transfer-Encoding": "quoted-printable", "X-Credgw-Kind": "revocation", "From": "credgw@agency.example",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if h.Get("Bcc") != "" || bytes.Contains(raw, []byte("\r\nBcc:")) {
		t.Errorf("a header was injected through the subject:\n%s", raw)
	}
	subj := h.Get("Subject")
	if !strings.HasPrefix(subj, "=?utf-8?q?") {
		t.Errorf("a non-ASCII subject is not RFC 2047-encoded: %q", subj)
	}
	if dec, err := new(mime.WordDecoder).DecodeHeader(subj); err != nil || !strings.HasPrefix(dec, "Révocation: credentials revoked") {
		t.Errorf("subject decodes to %q (%v)", dec, err)
	}
	for _, line := range strings.Split(string(raw), "\r\n") {
		if len(line) > 78 && !strings.HasPrefix(line, "Subject:") {
			t.Errorf("line longer than 78 characters: %q", line)
		}
	}
	qp, _ := io.ReadAll(msg.Body)
	if got, err := io.ReadAll(quotedprintableReader(qp)); err != nil || strings.ReplaceAll(string(got), "\r\n", "\n") != body+"\n" {
		t.Errorf("body decodes to %q (%v)", got, err)
	}
	// An ASCII subject stays as it is.
	n.Subject = "Derived PIV credentials were revoked"
	msg, _ = mail.ReadMessage(bytes.NewReader(message("credgw@agency.example", n, now)))
	if got := msg.Header.Get("Subject"); got != n.Subject {
		t.Errorf("ASCII subject: %q", got)
	}
}

func quotedprintableReader(b []byte) io.Reader { return quotedprintable.NewReader(bytes.NewReader(b)) }
