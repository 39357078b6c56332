package activation

import (
	"errors"
	"fmt"
)

// Kinds of refusal whose message is made for the case (the transport maps
// the kind to a code and sends the message as it is).
var (
	// ErrPermission: this caller may not do this.
	ErrPermission = errors.New("activation: permission denied")
	// ErrPrecondition: not in the current state, or not yet.
	ErrPrecondition = errors.New("activation: not possible in the current state")
	// ErrNoSuch: what the request names does not exist.
	ErrNoSuch = errors.New("activation: not found")
)

// refusal is an error of a kind with its own message.
type refusal struct {
	kind error
	msg  string
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.kind }

func denied(format string, a ...any) error {
	return &refusal{kind: ErrPermission, msg: fmt.Sprintf(format, a...)}
}

func notNow(format string, a ...any) error {
	return &refusal{kind: ErrPrecondition, msg: fmt.Sprintf(format, a...)}
}

func noSuch(format string, a ...any) error {
	return &refusal{kind: ErrNoSuch, msg: fmt.Sprintf(format, a...)}
}

func invalid(format string, a ...any) error {
	return &refusal{kind: ErrInvalid, msg: fmt.Sprintf(format, a...)}
}

// lockedNow is ErrLocked from the call whose wrong password locked the code:
// the lock is recorded and told to the person once, on that call.
// withPackage: a package was stored (a device had given the right
// password before): what it carried is revoked, and the person's escrowed
// keys may have left escrow. issuing: a package was being made.
type lockedNow struct{ withPackage, issuing bool }

func (lockedNow) Error() string { return ErrLocked.Error() }
func (lockedNow) Is(target error) bool {
	_, now := target.(lockedNow)
	return target == ErrLocked || now
}

var (
	errLockedNow            error = lockedNow{}
	errLockedNowWithPackage error = lockedNow{withPackage: true}
	// errLockedNowIssuing: locked while the package was being made; it
	// can no longer be stored, so nothing left escrow.
	errLockedNowIssuing error = lockedNow{issuing: true}
)
