package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/credgw/credgw/store"
)

// Notifications (SP 800-157r1 §2.2: the subscriber is told of every
// binding; Common Policy §4.12.1: of every escrowed-key delivery): written
// to the store's outbox with the event, delivered by any replica, retried
// with backoff. Sending never blocks the request that caused it.

type notifier interface {
	send(ctx context.Context, n store.Notification) error
	name() string
}

type smtpNotifier struct {
	cfg      SMTPConfig
	tls      *tls.Config
	password string
}

func (m *smtpNotifier) name() string { return "smtp" }

func (m *smtpNotifier) send(ctx context.Context, n store.Notification) error {
	if n.Recipient == "" {
		return nil // no address of record: nothing to send by email
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", m.cfg.Address)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	host, _, _ := net.SplitHostPort(m.cfg.Address)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("credgw"); err != nil {
		return err
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(m.tls); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
	} else if !m.cfg.InsecureNoTLS {
		return errors.New("the relay does not offer STARTTLS (set notifications.smtp.insecure_no_tls only for a local relay)")
	}
	if m.cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.cfg.Username, m.password, host)); err != nil {
			return fmt.Errorf("AUTH: %w", err)
		}
	}
	if err := c.Mail(m.cfg.From); err != nil {
		return err
	}
	if err := c.Rcpt(n.Recipient); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@credgw>\r\nX-Credgw-Kind: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n%s\r\n",
		m.cfg.From, n.Recipient, n.Subject, n.ID, n.Kind, strings.ReplaceAll(n.Body, "\n", "\r\n"))
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

type webhookNotifier struct {
	url    string
	key    []byte
	client *http.Client
	now    func() time.Time
}

func (h *webhookNotifier) name() string { return "webhook" }

func (h *webhookNotifier) send(ctx context.Context, n store.Notification) error {
	body, _ := json.Marshal(map[string]string{"id": n.ID, "kind": n.Kind, "recipient": n.Recipient, "subject": n.Subject, "body": n.Body})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	at := h.now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Credgw-Timestamp", fmt.Sprint(at.Unix()))
	req.Header.Set("X-Credgw-Signature", WebhookSignature(h.key, at, body))
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
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// newNotifiers builds the configured back ends.
func newNotifiers(cfg *Config, now func() time.Time) ([]notifier, error) {
	var out []notifier
	if sc := cfg.Notify.SMTP; sc.Address != "" {
		host, _, _ := net.SplitHostPort(sc.Address)
		m := &smtpNotifier{cfg: sc, tls: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}}
		if sc.CAFile != "" {
			pem, err := os.ReadFile(cfg.Path(sc.CAFile))
			if err != nil {
				return nil, fmt.Errorf("notifications.smtp.ca_file: %w", err)
			}
			m.tls.RootCAs = x509.NewCertPool()
			if !m.tls.RootCAs.AppendCertsFromPEM(pem) {
				return nil, errors.New("notifications.smtp.ca_file: no PEM certificate in it")
			}
		}
		if sc.PasswordFile != "" {
			b, err := os.ReadFile(cfg.Path(sc.PasswordFile))
			if err != nil {
				return nil, fmt.Errorf("notifications.smtp.password_file: %w", err)
			}
			m.password = strings.TrimSpace(string(b))
		}
		out = append(out, m)
	}
	if wc := cfg.Notify.Webhook; wc.URL != "" {
		key, err := loadKeyFile(cfg, wc.SecretFile, "notifications.webhook.secret_file")
		if err != nil {
			return nil, err
		}
		out = append(out, &webhookNotifier{url: wc.URL, key: key, client: &http.Client{Timeout: 15 * time.Second}, now: now})
	}
	return out, nil
}

// notify puts a notification in the outbox and wakes the sender. A failure
// to enqueue is logged: the operation it reports has happened.
func (s *Server) notify(ctx context.Context, kind, recipient, subject, body string) {
	if len(s.notifiers) == 0 {
		return
	}
	id, err := randomToken(12)
	if err == nil {
		err = s.store.EnqueueNotification(context.WithoutCancel(ctx), store.Notification{ID: id, Kind: kind, Recipient: recipient,
			Subject: subject, Body: body, CreatedAt: s.now()})
	}
	if err != nil {
		s.log.Error("notification not queued", "kind", kind, "cause", err.Error())
		return
	}
	select {
	case s.notifyKick <- struct{}{}:
	default:
	}
}

// notifySet tells the holder of a credential set what happened to it.
func (s *Server) notifySet(ctx context.Context, kind, setID, subject, what string) {
	if len(s.notifiers) == 0 {
		return
	}
	cs, err := s.store.CredentialSet(ctx, setID)
	if err != nil {
		s.log.Error("notification: credential set", "credential_set_id", setID, "cause", err.Error())
		return
	}
	body := fmt.Sprintf("%s\n\nDerived credential: %q (%s)\nCredential set: %s\nTime: %s\n\n"+
		"If you did not expect this, contact your help desk or badge office at once.\n",
		what, cs.IdentityName, cs.CredentialType, cs.ID, s.now().UTC().Format(time.RFC1123))
	s.notify(ctx, kind, cs.Email, subject, body)
}

// notifyIdentity tells a PIV identity (at the address of record of its
// newest set) what happened to all its derived credentials.
func (s *Server) notifyIdentity(ctx context.Context, kind string, sel store.IdentitySelector, subject, what string) {
	if len(s.notifiers) == 0 {
		return
	}
	sets, err := s.store.CredentialSetsOfIdentity(ctx, sel)
	if err != nil || len(sets) == 0 {
		return
	}
	body := fmt.Sprintf("%s\n\nTime: %s\n\nIf you did not expect this, contact your help desk or badge office.\n", what, s.now().UTC().Format(time.RFC1123))
	s.notify(ctx, kind, sets[0].Email, subject, body)
}

// maxNotifyAttempts is when a notification is given up (≈ 2 days of
// hourly retries after the first backoffs).
const maxNotifyAttempts = 55

// DeliverNotifications sends what is due in the outbox, once. Every
// replica may run it: rows are claimed one by one.
func (s *Server) DeliverNotifications(ctx context.Context) (sent, failed int, err error) {
	if len(s.notifiers) == 0 {
		return 0, 0, nil
	}
	// Small batches: each claimed row is sent well within its lease.
	for range 200 {
		if ctx.Err() != nil {
			return sent, failed, nil
		}
		due, err := s.store.ClaimNotifications(ctx, s.now(), 2*time.Minute, 5)
		if err != nil {
			return sent, failed, err
		}
		if len(due) == 0 {
			return sent, failed, nil
		}
		s1, f1, err := s.sendClaimed(ctx, due)
		sent, failed = sent+s1, failed+f1
		if err != nil {
			return sent, failed, err
		}
	}
	return sent, failed, nil
}

// sendClaimed sends claimed notifications through every back end and
// records the outcome (even when ctx has ended).
func (s *Server) sendClaimed(ctx context.Context, due []store.Notification) (sent, failed int, err error) {
	for _, n := range due {
		var errs []error
		for _, b := range s.notifiers {
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
				s.log.Error("notification given up after repeated failures", "id", n.ID, "kind", n.Kind, "attempts", n.Attempts, "cause", err.Error())
			} else {
				s.log.Warn("notification not delivered; will retry", "id", n.ID, "kind", n.Kind, "attempts", n.Attempts, "retry_in", backoff, "cause", err.Error())
			}
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			ferr := s.store.NotificationFailed(rctx, n, err.Error(), s.now().Add(backoff))
			cancel()
			if ferr != nil {
				return sent, failed, ferr
			}
			continue
		}
		sent++
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err := s.store.NotificationSent(rctx, n, s.now())
		cancel()
		if err != nil {
			return sent, failed, err
		}
	}
	return sent, failed, nil
}

// notifyLoop delivers when woken by notify and every 30 seconds.
func (s *Server) notifyLoop() {
	defer s.wg.Done()
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.sweepStop:
			return
		case <-t.C:
		case <-s.notifyKick:
		}
		ctx, cancel := context.WithTimeout(s.bgCtx, 2*time.Minute)
		if _, _, err := s.DeliverNotifications(ctx); err != nil {
			s.log.Warn("delivering notifications", "err", err)
		}
		cancel()
	}
}
