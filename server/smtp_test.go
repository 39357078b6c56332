package server_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"mime/quotedprintable"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mailbox is a small SMTP server for the tests: EHLO, STARTTLS, AUTH PLAIN,
// MAIL, RCPT, DATA, QUIT. It keeps what it receives.
type mailbox struct {
	ln      net.Listener
	tls     *tls.Config
	refuse  atomic.Bool // answer RCPT with 451
	mu      sync.Mutex
	msgs    []mail
	arrived chan struct{}
}

type mail struct {
	to, data string
	tls      bool
	authed   bool
}

func startMailbox(cert tls.Certificate) (*mailbox, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &mailbox{ln: ln, tls: &tls.Config{Certificates: []tls.Certificate{cert}}, arrived: make(chan struct{}, 100)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m, nil
}

func (m *mailbox) serve(c net.Conn) {
	defer func() { c.Close() }()
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	say("220 test ESMTP")
	var cur mail
	inTLS := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			if inTLS {
				say("250-test\r\n250 AUTH PLAIN")
			} else {
				say("250-test\r\n250 STARTTLS")
			}
		case cmd == "STARTTLS":
			say("220 go ahead")
			tc := tls.Server(c, m.tls)
			if err := tc.Handshake(); err != nil {
				return
			}
			c, inTLS = tc, true
			r, w = bufio.NewReader(c), bufio.NewWriter(c)
		case strings.HasPrefix(cmd, "AUTH PLAIN"):
			cur.authed = true
			say("235 ok")
		case strings.HasPrefix(cmd, "MAIL FROM"):
			say("250 ok")
		case strings.HasPrefix(cmd, "RCPT TO"):
			if m.refuse.Load() {
				say("451 try again later")
				continue
			}
			cur.to = strings.Trim(strings.TrimSpace(line[len("RCPT TO:"):]), "<>")
			say("250 ok")
		case cmd == "DATA":
			say("354 go")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(l)
			}
			cur.data, cur.tls = decodeBody(b.String()), inTLS
			m.mu.Lock()
			m.msgs = append(m.msgs, cur)
			m.mu.Unlock()
			m.arrived <- struct{}{}
			cur = mail{authed: cur.authed}
			say("250 queued")
		case cmd == "RSET":
			cur = mail{authed: cur.authed}
			say("250 ok")
		case cmd == "QUIT":
			say("221 bye")
			return
		default:
			say("502 unknown")
		}
	}
}

// waitFor waits (bounded) for a message of the kind to the recipient.
func (m *mailbox) waitFor(t *testing.T, kind, to string) mail {
	t.Helper()
	return m.waitForText(t, kind, to)
}

// waitForText waits (bounded) for a message of the kind to the recipient
// that contains every text.
func (m *mailbox) waitForText(t *testing.T, kind, to string, texts ...string) mail {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		m.mu.Lock()
		for _, msg := range m.msgs {
			if msg.to == to && strings.Contains(msg.data, "X-Credgw-Kind: "+kind+"\r\n") && containsAll(msg.data, texts) {
				m.mu.Unlock()
				return msg
			}
		}
		m.mu.Unlock()
		select {
		case <-m.arrived:
		case <-deadline:
			t.Fatalf("no %s notification to %s arrived", kind, to)
		}
	}
}

// decodeBody keeps a message's headers and decodes a quoted-printable body,
// so that tests (and the check for secrets) read the text as sent.
func decodeBody(raw string) string {
	i := strings.Index(raw, "\r\n\r\n")
	if i < 0 || !strings.Contains(raw[:i], "\r\nContent-Transfer-Encoding: quoted-printable\r\n") {
		return raw
	}
	body, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(raw[i+4:])))
	if err != nil {
		return raw
	}
	return raw[:i+4] + string(body)
}

func containsAll(s string, texts []string) bool {
	for _, t := range texts {
		if !strings.Contains(s, t) {
			return false
		}
	}
	return true
}
