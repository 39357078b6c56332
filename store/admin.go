package store

import (
	"context"
	"fmt"
)

// AdminStore lists for administrators.
type AdminStore interface {
	// ListCredentialSets lists credential sets newest first, of one
	// identity if sel is not empty, in one state if state is not "".
	ListCredentialSets(ctx context.Context, sel IdentitySelector, state string, offset, limit int) ([]CredentialSet, error)
	// ListActivations lists activations newest first, likewise.
	ListActivations(ctx context.Context, sel IdentitySelector, state string, offset, limit int) ([]Activation, error)
}

// adminWhere builds the WHERE clause over credential_sets (alias cs).
func (s *DB) adminWhere(sel IdentitySelector, stateCol, state string) (string, []any, error) {
	var conds []string
	var args []any
	if len(sel.FASCN) > 0 || sel.CardUUID != "" || sel.PersonID != "" || sel.CertSHA256 != "" {
		_, _, column, arg, err := sel.key()
		if err != nil {
			return "", nil, err
		}
		args = append(args, arg)
		cond := fmt.Sprintf("cs.%s = $%d", column, len(args))
		if column == "person_id" {
			cond = s.fold("cs.person_id") + " = " + s.fold(fmt.Sprintf("$%d", len(args)))
		}
		conds = append(conds, cond)
	}
	if state != "" {
		args = append(args, state)
		conds = append(conds, fmt.Sprintf("%s = $%d", stateCol, len(args)))
	}
	w := ""
	for i, c := range conds {
		if i == 0 {
			w = " WHERE " + c
		} else {
			w += " AND " + c
		}
	}
	return w, args, nil
}

func (s *DB) ListCredentialSets(ctx context.Context, sel IdentitySelector, state string, offset, limit int) ([]CredentialSet, error) {
	w, args, err := s.adminWhere(sel, "cs.state", state)
	if err != nil {
		return nil, err
	}
	return s.querySets(ctx, fmt.Sprintf(`SELECT %s FROM credential_sets cs%s ORDER BY cs.created_at DESC, cs.id LIMIT %d OFFSET %d`,
		prefixed("cs.", setColumns), w, limit, offset), args...)
}

func (s *DB) ListActivations(ctx context.Context, sel IdentitySelector, state string, offset, limit int) ([]Activation, error) {
	w, args, err := s.adminWhere(sel, "a.state", state)
	if err != nil {
		return nil, err
	}
	cols := prefixed("a.", actColumns)
	rows, err := s.r.QueryContext(ctx, fmt.Sprintf(`SELECT %s FROM activations a JOIN credential_sets cs ON cs.id = a.credential_set_id%s
		ORDER BY a.created_at DESC, a.id LIMIT %d OFFSET %d`, cols, w, limit, offset), args...)
	if err != nil {
		return nil, wrapDB(err)
	}
	defer rows.Close()
	var out []Activation
	for rows.Next() {
		a, err := scanAct(rows)
		if err != nil {
			return nil, err
		}
		a.Package = nil
		out = append(out, a)
	}
	return out, wrapDB(rows.Err())
}

// prefixed qualifies every column of a comma-separated list; the package
// blob is left out (NULL).
func prefixed(p, cols string) string {
	var out []byte
	for i, c := range splitCols(cols) {
		if i > 0 {
			out = append(out, ", "...)
		}
		if c == "package" {
			out = append(out, "NULL"...)
			continue
		}
		out = append(out, p+c...)
	}
	return string(out)
}

func splitCols(cols string) []string {
	var out []string
	cur := ""
	for _, r := range cols {
		switch r {
		case ',':
			out = append(out, cur)
			cur = ""
		case ' ', '\n', '\t':
		default:
			cur += string(r)
		}
	}
	return append(out, cur)
}

var _ AdminStore = (*DB)(nil)
