package hsmsim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// DefaultVPCDPort is where vsmartcard's vpcd reader driver listens for its
// virtual card (0x8C7B in /etc/reader.conf.d/vpcd).
const DefaultVPCDPort = 35963

// vpcd's control messages: a one-byte message instead of an APDU.
const (
	vpcdPowerOff = 0x00
	vpcdPowerOn  = 0x01
	vpcdReset    = 0x02
	vpcdGetATR   = 0x04
)

// InsertVPCD presents the card in vpcd's reader at addr (host:port) until
// ctx ends; ending it removes the card. vpcd (vsmartcard's PC/SC reader
// driver, loaded by pcscd) listens there; each message either way is a
// 2-byte big-endian length and the bytes: an APDU, or one control byte
// (power off, power on, reset, get ATR — answered with the ATR). If vpcd
// goes away (pcscd restarted) the card waits for it and is inserted again.
// onInsert, if not nil, runs each time vpcd has read the card's ATR.
func InsertVPCD(ctx context.Context, addr string, card *PIVCard, log *slog.Logger, onInsert func()) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var d net.Dialer
	waiting := false
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !waiting {
				log.Info("waiting for vpcd", "addr", addr, "err", err.Error())
				waiting = true
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(250 * time.Millisecond): // retry period, not synchronisation
			}
			continue
		}
		waiting = false
		err = serveVPCD(ctx, conn, card, log, onInsert)
		conn.Close()
		card.Reset()
		if ctx.Err() != nil {
			log.Info("card removed", "addr", addr)
			return nil
		}
		log.Info("vpcd closed the connection; reconnecting", "err", fmt.Sprint(err))
	}
}

func serveVPCD(ctx context.Context, conn net.Conn, card *PIVCard, log *slog.Logger, onInsert func()) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	announced := false
	var hdr [2]byte
	for {
		quickACK(conn)
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return err
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		msg := make([]byte, n)
		quickACK(conn)
		if _, err := io.ReadFull(conn, msg); err != nil {
			return err
		}
		var resp []byte
		switch {
		case n == 1 && msg[0] == vpcdGetATR:
			resp = card.ATR()
		case n == 1 && (msg[0] == vpcdPowerOff || msg[0] == vpcdPowerOn || msg[0] == vpcdReset):
			card.Reset()
			continue // no answer
		case n == 1:
			return fmt.Errorf("hsmsim: vpcd sent unknown control byte %#x", msg[0])
		default:
			resp = card.Transmit(ctx, msg)
		}
		if len(resp) > 0xFFFF {
			return errors.New("hsmsim: response too long for vpcd")
		}
		out := make([]byte, 2+len(resp))
		binary.BigEndian.PutUint16(out, uint16(len(resp)))
		copy(out[2:], resp)
		if _, err := conn.Write(out); err != nil {
			return err
		}
		if !announced && n == 1 {
			announced = true
			log.Info("card inserted", "addr", conn.RemoteAddr().String())
			if onInsert != nil {
				onInsert()
			}
		}
	}
}

// quickACK acknowledges vpcd's segments at once. vpcd (Debian 12) sends a
// message's length and its bytes in two writes with Nagle's algorithm on:
// the second waits for the first's ACK, which a delayed ACK holds back
// ~40 ms, for every APDU. TCP_QUICKACK is not sticky, so it is set before
// every read.
func quickACK(conn net.Conn) {
	tc, ok := conn.(*net.TCPConn)
	if !ok {
		return
	}
	if rc, err := tc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
}
