// Package notify is the notification outbox and its senders (SP 800-157r1
// §2.2: the subscriber is told of every binding; Common Policy §4.12.1: of
// every escrowed-key delivery). A service enqueues a notification in the
// store's outbox with the event it reports; any replica delivers it by
// email (SMTP with STARTTLS) and/or a signed webhook, retrying with
// backoff. Enqueueing never blocks, and never fails, the request that
// caused it.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/smtp"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/credgw/credgw/store"
)

// Config is where notifications go: email to the address of record,
// and/or a signed webhook (the notifications section of credgw.yaml).
type Config struct {
	SMTP    SMTPConfig    `yaml:"smtp"`
	Webhook WebhookConfig `yaml:"webhook"`
	// File, if set, is a file each notification is appended to as one
	// JSON line (0600): for an agency's own mailer or log pipeline to
	// take them from, and the demo's.
	File string `yaml:"file"`
}

// SMTPConfig is the mail relay. STARTTLS is required unless
// insecure_no_tls is set.
type SMTPConfig struct {
	// Address is host:port of the relay ("" = no email).
	Address string `yaml:"address"`
	// From is the sender address.
	From string `yaml:"from"`
	// Username and PasswordFile authenticate (AUTH PLAIN, after STARTTLS).
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	// CAFile verifies the relay's certificate (default: the system roots).
	CAFile string `yaml:"ca_file"`
	// InsecureNoTLS sends without STARTTLS (a local relay only).
	InsecureNoTLS bool `yaml:"insecure_no_tls"`
}

// WebhookConfig posts every notification as signed JSON.
type WebhookConfig struct {
	URL        string `yaml:"url"`
	SecretFile string `yaml:"secret_file"`
}

// Validate checks the section; each problem is reported through bad.
func (c Config) Validate(bad func(format string, a ...any)) {
	if c.SMTP.Address != "" {
		if _, _, err := net.SplitHostPort(c.SMTP.Address); err != nil {
			bad("notifications.smtp.address %q: want host:port", c.SMTP.Address)
		}
		if !strings.Contains(c.SMTP.From, "@") {
			bad("notifications.smtp.from %q: want the sender's email address", c.SMTP.From)
		}
		if c.SMTP.Username != "" && c.SMTP.PasswordFile == "" {
			bad("notifications.smtp.password_file: required with username")
		}
	}
	if (c.Webhook.URL == "") != (c.Webhook.SecretFile == "") {
		bad("notifications.webhook: give both url and secret_file")
	}
	if c.Webhook.URL != "" {
		// Never the URL itself: it may carry the receiver's token.
		if u, err := url.Parse(c.Webhook.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("notifications.webhook.url does not parse as an http(s) URL with a host (it is not shown: it may carry a token)")
		}
	}
}

// Signature is the X-Credgw-Signature value of a body sent at ts: HMAC-SHA-256
// under the shared key over "<unix seconds>.<body>". The termination webhook
// credgw receives is signed the same way.
func Signature(key []byte, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%d.", ts.Unix())
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// gatewayGroup is the gateway's group by name (the packaged set-up's),
// whose group read root's admin commands take too.
var gatewayGroup = "credgw"

// ReadSecretFile reads a file holding a secret (a key, a password), which
// other users may not read and only its owner may change: no "other" bit,
// no group write bit, and group read only where the group is the
// gateway's own (root:credgw 0640, the usual set-up) or the file carries
// an ACL (systemd's LoadCredential: 0400 plus an entry for the service's
// user, which stat shows as 0440, the ACL's mask). field names the
// setting in errors, which never carry the content.
func ReadSecretFile(path, field string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	perm := st.Mode().Perm()
	if perm&0o027 != 0 || perm&0o040 != 0 && !groupIsOurs(st) && !hasACL(path) {
		return nil, fmt.Errorf("%s: %s has mode %v: other users may read or change the secret in it; make it 0600 (chmod 600) for the gateway's user (or 0640 with the gateway's own group)", field, path, perm)
	}
	// A pipe (a secret handed over by a parent process) has no folder to
	// swap it in.
	if err := foldersSafe(f, path); st.Mode().IsRegular() && err != nil {
		return nil, fmt.Errorf("%s: %s: another user could put a file in its place: %v; keep secrets in folders only root and the gateway's user may change", field, path, err)
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return b, nil
}

// ReadKeyFile reads an HMAC key of at least 32 bytes, in hex, from a
// secret file (ReadSecretFile); field names the setting in errors.
func ReadKeyFile(path, field string) ([]byte, error) {
	b, err := ReadSecretFile(path, field)
	if err != nil {
		return nil, err
	}
	k, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(k) < 32 {
		return nil, fmt.Errorf("%s: want at least 64 hex digits (32 bytes)", field)
	}
	return k, nil
}

// Store is what the outbox needs of the store.
type Store interface {
	store.OutboxStore
	CredentialSet(ctx context.Context, id string) (store.CredentialSet, error)
	CredentialSetsOfIdentity(ctx context.Context, sel store.IdentitySelector) ([]store.CredentialSet, error)
}

// Outbox enqueues notifications and delivers them.
type Outbox struct {
	st      Store
	log     *slog.Logger
	now     func() time.Time
	senders []sender
	kick    chan struct{}
}

// New builds the configured senders; path resolves a file setting (relative
// to the config file). With no sender configured, the outbox drops what it
// is given.
func New(cfg Config, path func(string) string, st Store, log *slog.Logger, now func() time.Time) (*Outbox, error) {
	if now == nil {
		now = time.Now
	}
	o := &Outbox{st: st, log: log, now: now, kick: make(chan struct{}, 1)}
	if sc := cfg.SMTP; sc.Address != "" {
		host, _, _ := net.SplitHostPort(sc.Address)
		m := &smtpSender{cfg: sc, tls: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}, now: now}
		if sc.CAFile != "" {
			pem, err := os.ReadFile(path(sc.CAFile))
			if err != nil {
				return nil, fmt.Errorf("notifications.smtp.ca_file: %w", err)
			}
			m.tls.RootCAs = x509.NewCertPool()
			if !m.tls.RootCAs.AppendCertsFromPEM(pem) {
				return nil, errors.New("notifications.smtp.ca_file: no PEM certificate in it")
			}
		}
		if sc.PasswordFile != "" {
			b, err := ReadSecretFile(path(sc.PasswordFile), "notifications.smtp.password_file")
			if err != nil {
				return nil, err
			}
			m.password = strings.TrimSpace(string(b))
		}
		o.senders = append(o.senders, m)
	}
	if cfg.File != "" {
		f, err := newFileSender(path(cfg.File))
		if err != nil {
			return nil, err
		}
		o.senders = append(o.senders, f)
	}
	if wc := cfg.Webhook; wc.URL != "" {
		key, err := ReadKeyFile(path(wc.SecretFile), "notifications.webhook.secret_file")
		if err != nil {
			return nil, err
		}
		o.senders = append(o.senders, &webhookSender{url: wc.URL, key: key, client: webhookClient(), now: o.now})
	}
	return o, nil
}

// Enabled reports whether any sender is configured.
func (o *Outbox) Enabled() bool { return o != nil && len(o.senders) > 0 }

// Backlog counts the notifications not delivered yet (the gateway's
// credgw_outbox_backlog gauge).
func (o *Outbox) Backlog(ctx context.Context) (int, error) { return o.st.OutboxBacklog(ctx) }

// Kicks is signalled when something was enqueued (the delivery loop waits
// on it).
func (o *Outbox) Kicks() <-chan struct{} { return o.kick }

// enqueue puts a notification in the outbox and wakes the sender. A failure
// to enqueue is logged: the operation it reports has happened.
func (o *Outbox) enqueue(ctx context.Context, kind, recipient, subject, body string) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		o.log.ErrorContext(ctx, "notification not queued", "kind", kind, "cause", err.Error())
		return
	}
	if err := o.enqueueID(ctx, base64.RawURLEncoding.EncodeToString(b), kind, recipient, subject, body); err != nil {
		o.log.ErrorContext(ctx, "notification not queued", "kind", kind, "cause", err.Error())
	}
}

// enqueueID puts a notification with the id given in the outbox (once: one
// stored under that id already stays) and wakes the sender.
func (o *Outbox) enqueueID(ctx context.Context, id, kind, recipient, subject, body string) error {
	if recipient != "" && !Mailbox(recipient) {
		return fmt.Errorf("the address of record %q is not one mailbox (its card's certificate names it so): no notice can be sent to it", recipient)
	}
	if err := o.st.EnqueueNotification(context.WithoutCancel(ctx), store.Notification{ID: id,
		Kind: kind, Recipient: recipient, Subject: subject, Body: body, CreatedAt: o.now()}); err != nil {
		return err
	}
	select {
	case o.kick <- struct{}{}:
	default:
	}
	return nil
}

// SetOnce is Set for a notice that must be queued, once: its id comes from
// kind, the set and key (what it tells of: a redemption), so a caller that
// repeats it after a failure (the device's retry) queues it once, and the
// error says it was not queued (the caller fails, and its retry queues
// it).
func (o *Outbox) SetOnce(ctx context.Context, kind, setID, key, subject, what string) error {
	if !o.Enabled() {
		return nil
	}
	ctx = context.WithoutCancel(ctx)
	cs, err := o.st.CredentialSet(ctx, setID)
	if err != nil {
		return fmt.Errorf("notification: credential set %s: %w", setID, err)
	}
	if cs.Email != "" && !Mailbox(cs.Email) {
		// No retry can send it: logged (enrollment refuses such an
		// address where an escrowed key would be delivered).
		o.log.ErrorContext(ctx, "notification not queued: the address of record is not one mailbox", "kind", kind, "credential_set_id", setID)
		return nil
	}
	sum := sha256.Sum256([]byte("credgw-notice\x00" + kind + "\x00" + setID + "\x00" + key))
	return o.enqueueID(ctx, base64.RawURLEncoding.EncodeToString(sum[:12]), kind, cs.Email, subject, o.setBody(cs, what))
}

// setBody is the body of a notice about a credential set.
func (o *Outbox) setBody(cs store.CredentialSet, what string) string {
	return fmt.Sprintf("%s\n\nDerived credential: %q (%s)\nCredential set: %s\nTime: %s\n\n"+
		"If you did not expect this, contact your help desk or badge office at once.\n",
		what, cs.IdentityName, cs.CredentialType, cs.ID, o.now().UTC().Format(time.RFC1123))
}

// Set tells the holder of a credential set what happened to it.
func (o *Outbox) Set(ctx context.Context, kind, setID, subject, what string) {
	if !o.Enabled() {
		return
	}
	// What was done is told even when the caller has gone (a sweep's
	// budget spent after the revocation it tells of).
	ctx = context.WithoutCancel(ctx)
	cs, err := o.st.CredentialSet(ctx, setID)
	if err != nil {
		o.log.ErrorContext(ctx, "notification: credential set", "credential_set_id", setID, "cause", err.Error())
		return
	}
	o.enqueue(ctx, kind, cs.Email, subject, o.setBody(cs, what))
}

// Identity tells a PIV identity (at every address of record its sets have)
// what happened to all its derived credentials.
func (o *Outbox) Identity(ctx context.Context, kind string, sel store.IdentitySelector, subject, what string) {
	if !o.Enabled() {
		return
	}
	ctx = context.WithoutCancel(ctx) // as Set
	sets, err := o.st.CredentialSetsOfIdentity(ctx, sel)
	if err != nil || len(sets) == 0 {
		return
	}
	body := fmt.Sprintf("%s\n\nTime: %s\n\nIf you did not expect this, contact your help desk or badge office.\n", what, o.now().UTC().Format(time.RFC1123))
	// Every address of record the identity's sets have, once each (the
	// newest set may have none: enrolled for authentication only).
	seen := map[string]bool{}
	for _, cs := range sets {
		if cs.Email == "" || seen[strings.ToLower(cs.Email)] {
			continue
		}
		seen[strings.ToLower(cs.Email)] = true
		o.enqueue(ctx, kind, cs.Email, subject, body)
	}
	if len(seen) == 0 {
		o.enqueue(ctx, kind, "", subject, body) // for the webhook and file senders
	}
}

// Mailbox reports whether addr is one mailbox, as an SMTP RCPT TO takes it:
// a bare addr-spec, no display name, angle brackets, list or control
// character. An address of record comes from a card's certificate, which
// only its CA checked: "a@b> NOTIFY=NEVER" would end the RCPT TO's address
// and pass the rest as ESMTP parameters.
func Mailbox(addr string) bool {
	if len(addr) > 254 || strings.ContainsFunc(addr, func(r rune) bool { return r < 0x21 || r == 0x7f }) {
		return false
	}
	a, err := mail.ParseAddress(addr)
	return err == nil && a.Name == "" && a.Address == addr
}

// SentRetention is how long a sent notification stays in the outbox (its
// id guards a repeat against telling twice); then it goes, with the name
// and address it carried. The audit log keeps the events themselves.
const SentRetention = 30 * 24 * time.Hour

// Prune deletes the notifications sent more than SentRetention before now.
func (o *Outbox) Prune(ctx context.Context, now time.Time) (int64, error) {
	if !o.Enabled() {
		return 0, nil
	}
	return o.st.PruneSentNotifications(ctx, now.Add(-SentRetention))
}

// maxNotifyAttempts is when a notification is given up (≈ 2 days of
// hourly retries after the first backoffs).
const maxNotifyAttempts = 55

// Deliver sends what is due in the outbox, once. Every
// replica may run it: rows are claimed one by one.
func (o *Outbox) Deliver(ctx context.Context) (sent, failed int, err error) {
	if !o.Enabled() {
		return 0, 0, nil
	}
	// Connections opened for this run (the SMTP relay's) close with it.
	defer func() {
		for _, b := range o.senders {
			if f, ok := b.(interface{ finish() }); ok {
				f.finish()
			}
		}
	}()
	// Small batches: each claimed row is sent well within its lease.
	for range 200 {
		if ctx.Err() != nil {
			return sent, failed, nil
		}
		due, err := o.st.ClaimNotifications(ctx, o.now(), 2*time.Minute, 5)
		if err != nil {
			return sent, failed, err
		}
		if len(due) == 0 {
			return sent, failed, nil
		}
		s1, f1, err := o.sendClaimed(ctx, due)
		sent, failed = sent+s1, failed+f1
		if err != nil {
			return sent, failed, err
		}
	}
	return sent, failed, nil
}

// sendClaimed sends claimed notifications through every back end and
// records the outcome (even when ctx has ended).
func (o *Outbox) sendClaimed(ctx context.Context, due []store.Notification) (sent, failed int, err error) {
	for _, n := range due {
		var errs []error
		for _, b := range o.senders {
			if slices.Contains(strings.Split(n.DoneBackends, ","), b.name()) {
				continue // delivered there on an earlier attempt
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			if err := b.send(sctx, n); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", b.name(), err))
			} else if n.DoneBackends == "" {
				n.DoneBackends = b.name()
			} else {
				n.DoneBackends += "," + b.name()
			}
			cancel()
		}
		if err := errors.Join(errs...); err != nil {
			failed++
			backoff := min(time.Hour, 30*time.Second<<min(n.Attempts-1, 7))
			if n.Attempts >= maxNotifyAttempts {
				// About two days of tries: give up, loudly; the row
				// stays in the outbox with its last error.
				backoff = 100 * 365 * 24 * time.Hour
				o.log.ErrorContext(ctx, "notification given up after repeated failures", "id", n.ID, "kind", n.Kind, "attempts", n.Attempts, "cause", err.Error())
			} else {
				o.log.WarnContext(ctx, "notification not delivered; will retry", "id", n.ID, "kind", n.Kind, "attempts", n.Attempts, "retry_in", backoff, "cause", err.Error())
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			ferr := o.st.NotificationFailed(rctx, n, err.Error(), o.now().Add(backoff))
			cancel()
			if ferr != nil {
				return sent, failed, ferr
			}
			continue
		}
		sent++
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := o.st.NotificationSent(rctx, n, o.now())
		cancel()
		if err != nil {
			return sent, failed, err
		}
	}
	return sent, failed, nil
}

// Run delivers when something is enqueued and every 30 seconds, until ctx
// ends.
func (o *Outbox) Run(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-o.kick:
		}
		dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		if _, _, err := o.Deliver(dctx); err != nil {
			o.log.WarnContext(ctx, "delivering notifications", "err", err)
		}
		cancel()
	}
}

// A sender delivers one notification by one means.
type sender interface {
	send(ctx context.Context, n store.Notification) error
	name() string
}

type smtpSender struct {
	cfg      SMTPConfig
	tls      *tls.Config
	password string
	now      func() time.Time

	// One relay connection serves every message of a delivery run
	// (Deliver closes it at the end); mu keeps concurrent runs to it one
	// at a time.
	mu   sync.Mutex
	conn net.Conn
	c    *smtp.Client
}

func (m *smtpSender) name() string { return "smtp" }

func (m *smtpSender) send(ctx context.Context, n store.Notification) error {
	if n.Recipient == "" {
		return nil // no address of record: nothing to send by email
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c != nil {
		m.deadline(ctx)
		// The connection of an earlier message: still there?
		if err := m.c.Reset(); err != nil {
			m.drop()
		}
	}
	if m.c == nil {
		if err := m.dial(ctx); err != nil {
			return err
		}
	}
	// A cancelled ctx (shutdown) ends what waits on the connection.
	conn := m.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := m.deliver(n); err != nil {
		m.drop() // the next message starts afresh
		return err
	}
	return nil
}

// deadline bounds what follows on the connection by ctx.
func (m *smtpSender) deadline(ctx context.Context) {
	if dl, ok := ctx.Deadline(); ok {
		m.conn.SetDeadline(dl)
	} else {
		m.conn.SetDeadline(time.Time{})
	}
}

// dial connects, says hello, starts TLS and authenticates.
func (m *smtpSender) dial(ctx context.Context) error {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", m.cfg.Address)
	if err != nil {
		return err
	}
	m.conn = conn
	m.deadline(ctx)
	host, _, _ := net.SplitHostPort(m.cfg.Address)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	m.c = c
	fail := func(err error) error { m.drop(); return err }
	if err := c.Hello("credgw"); err != nil {
		return fail(err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(m.tls); err != nil {
			return fail(fmt.Errorf("STARTTLS: %w", err))
		}
	} else if !m.cfg.InsecureNoTLS {
		return fail(errors.New("the relay does not offer STARTTLS (set notifications.smtp.insecure_no_tls only for a local relay)"))
	}
	if m.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.cfg.Username, m.password, host)); err != nil {
			return fail(fmt.Errorf("AUTH: %w", err))
		}
	}
	return nil
}

// deliver sends one message on the open connection.
func (m *smtpSender) deliver(n store.Notification) error {
	if err := m.c.Mail(m.cfg.From); err != nil {
		return err
	}
	if err := m.c.Rcpt(n.Recipient); err != nil {
		return err
	}
	w, err := m.c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(message(m.cfg.From, n, m.now())); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// drop closes the connection without ceremony.
func (m *smtpSender) drop() {
	if m.c != nil {
		m.c.Close()
	}
	m.c, m.conn = nil, nil
}

// finish ends a delivery run: QUIT, and the connection closes.
func (m *smtpSender) finish() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return
	}
	m.conn.SetDeadline(time.Now().Add(10 * time.Second))
	m.c.Quit()
	m.drop()
}

// message is the RFC 5322 message of a notification: Date, Message-ID
// (the notification's id, so a retry is recognisably the same message),
// MIME headers, a Subject in RFC 2047 encoded words when it is not ASCII,
// and the body in quoted-printable UTF-8 (any line length, any text).
func message(from string, n store.Notification, now time.Time) []byte {
	domain := "credgw.invalid"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i < len(from)-1 {
		domain = strings.Trim(from[i+1:], "<> ")
	}
	var b bytes.Buffer
	h := func(name, value string) {
		// Header values never carry a line break (no header injection).
		value = strings.NewReplacer("\r", " ", "\n", " ").Replace(value)
		b.WriteString(name + ": " + value + "\r\n")
	}
	h("Date", now.Format(time.RFC1123Z))
	h("From", from)
	h("To", n.Recipient)
	h("Subject", mime.QEncoding.Encode("utf-8", n.Subject))
	h("Message-ID", "<"+n.ID+"@"+domain+">")
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "quoted-printable")
	h("X-Credgw-Kind", n.Kind)
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(strings.TrimRight(n.Body, "\r\n") + "\n"))
	qp.Close()
	return b.Bytes()
}

// webhookClient does not follow redirects: on a 307 or 308 the signed
// body and its X-Credgw-Signature and X-Credgw-Timestamp headers would be
// sent again to wherever the answer points (https to http included). The
// 3xx itself comes back to send, which fails the delivery.
func webhookClient() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// fileSender appends each notification to a file as one JSON line. The
// file is the gateway user's alone (0600); a symbolic link in its place is
// not followed. Replicas may share it: each line is one append.
type fileSender struct{ path string }

func newFileSender(path string) (*fileSender, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return &fileSender{path: path}, nil
	case err != nil:
		return nil, fmt.Errorf("notifications.file: %w", err)
	case !fi.Mode().IsRegular():
		return nil, fmt.Errorf("notifications.file: %s is not a regular file", path)
	case fi.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("notifications.file: %s has mode %v: notifications name people and their credentials; make it 0600 (chmod 600) for the gateway's user", path, fi.Mode().Perm())
	}
	return &fileSender{path: path}, nil
}

func (f *fileSender) name() string { return "file" }

// privateFile refuses an open file that is not a regular file of the
// gateway's user alone: other users may not read it, and it has no other
// name (a hard link elsewhere).
func privateFile(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		return errors.New("is not a regular file")
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("has mode %v: notifications name people and their credentials; make it 0600 (chmod 600)", fi.Mode().Perm())
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("belongs to uid %d, not the gateway's user (%d)", st.Uid, os.Geteuid())
	case ok && st.Nlink != 1:
		return fmt.Errorf("has %d names (hard links): give it one", st.Nlink)
	}
	return nil
}

func (f *fileSender) send(_ context.Context, n store.Notification) error {
	line, err := json.Marshal(map[string]string{"id": n.ID, "kind": n.Kind, "recipient": n.Recipient, "subject": n.Subject, "body": n.Body,
		"created_at": n.CreatedAt.UTC().Format(time.RFC3339)})
	if err != nil {
		return err
	}
	out, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return err
	}
	// O_NONBLOCK: a FIFO put there would otherwise block the delivery
	// loop until something read it (for a regular file it changes
	// nothing). What was opened, not the name: a file made or changed since the
	// start (logrotate's "create 0644", another user, a hard link) is not
	// written to.
	if err := privateFile(out); err != nil {
		out.Close()
		return fmt.Errorf("notifications.file: %s %w", f.path, err)
	}
	if _, err := out.Write(append(line, '\n')); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

type webhookSender struct {
	url    string
	key    []byte
	client *http.Client
	now    func() time.Time
}

func (h *webhookSender) name() string { return "webhook" }

func (h *webhookSender) send(ctx context.Context, n store.Notification) error {
	body, _ := json.Marshal(map[string]string{"id": n.ID, "kind": n.Kind, "recipient": n.Recipient, "subject": n.Subject, "body": n.Body})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		// Not the URL (nor the parser's text, which quotes it): it may
		// carry a token.
		return errors.New("notifications.webhook.url does not parse as a URL")
	}
	at := h.now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Credgw-Timestamp", fmt.Sprint(at.Unix()))
	req.Header.Set("X-Credgw-Signature", Signature(h.key, at, body))
	resp, err := h.client.Do(req)
	if err != nil {
		// Not the URL: it may carry a token.
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("webhook %s: %w", ue.Op, ue.Err)
		}
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 == 3 {
		// Not the Location either: like the URL, it may carry a token.
		return fmt.Errorf("webhook answered %s, a redirect, which is not followed (the signed notification goes to notifications.webhook.url only): set notifications.webhook.url to the final URL", resp.Status)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
