package agent

import (
	"errors"
	"fmt"
	"strings"
)

// commonPINs are refused as keystore PINs (SP 800-157r1 §3.1.4 → SP 800-63B:
// a blocklist of at least ten common values).
var commonPINs = []string{
	"123456", "654321", "111111", "000000", "123123", "112233", "121212", "666666", "222222", "333333",
	"444444", "555555", "777777", "888888", "999999", "12345678", "87654321", "11111111", "00000000",
	"123456789", "1234567890", "password", "qwerty", "abcdef", "abc123",
}

// ErrWeakPIN means a keystore PIN is too short or too common.
var ErrWeakPIN = errors.New("agent: keystore PIN refused")

// CheckKeystorePIN: at least 6 characters, none beyond U+FFFF, and not a
// common value. It runs before the download: a PIN that cannot protect the
// PKCS#12 files would otherwise be found out after the code is spent.
func CheckKeystorePIN(pin string) error {
	if len([]rune(pin)) < 6 {
		return fmt.Errorf("%w: use at least 6 characters", ErrWeakPIN)
	}
	for _, r := range pin {
		if r > 0xFFFF {
			// A PKCS#12 password is a BMPString (RFC 7292 App. B.1).
			return fmt.Errorf("%w: it has a character (such as an emoji) that a PKCS#12 file cannot hold; use letters, digits, spaces and punctuation", ErrWeakPIN)
		}
	}
	for _, c := range commonPINs {
		if strings.EqualFold(pin, c) {
			return fmt.Errorf("%w: it is one of the most common PINs", ErrWeakPIN)
		}
	}
	return nil
}
