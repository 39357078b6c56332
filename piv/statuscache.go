package piv

import (
	"container/list"
	"time"
)

// statusCache keeps fetched revocation answers in the order they were
// fetched. It is bounded twice: an answer past its nextUpdate or older than
// maxAge (Options.MaxStatusAge) could not be used and is dropped, and at
// most max answers are kept, the oldest evicted first — it is the next to
// go stale anyway. Not safe for concurrent use: statusChecker locks it.
type statusCache[V any] struct {
	max    int
	maxAge time.Duration
	order  *list.List // *cached[V], newest fetch at the front
	byKey  map[string]*list.Element
}

type cached[V any] struct {
	key                 string
	v                   V
	fetched, nextUpdate time.Time
}

func newStatusCache[V any](max int, maxAge time.Duration) *statusCache[V] {
	return &statusCache[V]{max: max, maxAge: maxAge, order: list.New(), byKey: map[string]*list.Element{}}
}

// usable reports whether an answer may still be used at now.
func (c *statusCache[V]) usable(e *cached[V], now time.Time) bool {
	return now.Before(e.nextUpdate) && now.Sub(e.fetched) < c.maxAge
}

// get returns the answer for key if it may still be used at now; an answer
// that may not is dropped.
func (c *statusCache[V]) get(key string, now time.Time) (V, bool) {
	el, ok := c.byKey[key]
	if !ok {
		var zero V
		return zero, false
	}
	e := el.Value.(*cached[V])
	if !c.usable(e, now) {
		c.remove(el)
		var zero V
		return zero, false
	}
	return e.v, true
}

// put stores the answer for key fetched at fetched, first dropping the
// answers too old to use and then, if the cache is still full, the oldest.
func (c *statusCache[V]) put(key string, v V, fetched, nextUpdate time.Time) {
	if el, ok := c.byKey[key]; ok {
		c.remove(el)
	}
	for el := c.order.Back(); el != nil && fetched.Sub(el.Value.(*cached[V]).fetched) >= c.maxAge; el = c.order.Back() {
		c.remove(el)
	}
	for c.order.Len() >= c.max {
		c.remove(c.order.Back())
	}
	c.byKey[key] = c.order.PushFront(&cached[V]{key: key, v: v, fetched: fetched, nextUpdate: nextUpdate})
}

func (c *statusCache[V]) remove(el *list.Element) {
	c.order.Remove(el)
	delete(c.byKey, el.Value.(*cached[V]).key)
}

func (c *statusCache[V]) len() int { return c.order.Len() }
