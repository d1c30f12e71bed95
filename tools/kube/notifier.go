package kube

import "sync"

// notifier hands out per-name channels that are closed on the next change
// of that name: many waiters, no polling, no lost wake-ups.
type notifier struct {
	mu      sync.Mutex
	waiters map[string]chan struct{}
}

func newNotifier() *notifier { return &notifier{waiters: map[string]chan struct{}{}} }

func (n *notifier) wait(name string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	ch, ok := n.waiters[name]
	if !ok {
		ch = make(chan struct{})
		n.waiters[name] = ch
	}
	return ch
}

func (n *notifier) fire(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.waiters[name]; ok {
		close(ch)
		delete(n.waiters, name)
	}
}
