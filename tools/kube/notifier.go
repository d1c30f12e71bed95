package kube

import "sync"

// notifier hands out per-name channels that are closed on the next change
// of that name (many waiters, no polling, no lost wake-ups), and calls
// subscribers with the name of every change.
type notifier struct {
	mu      sync.Mutex
	waiters map[string]chan struct{}
	subs    map[int]func(string)
	nextSub int
}

func newNotifier() *notifier {
	return &notifier{waiters: map[string]chan struct{}{}, subs: map[int]func(string){}}
}

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

// subscribe registers fn for every change until the returned func is called.
func (n *notifier) subscribe(fn func(string)) func() {
	n.mu.Lock()
	defer n.mu.Unlock()
	id := n.nextSub
	n.nextSub++
	n.subs[id] = fn
	return func() {
		n.mu.Lock()
		delete(n.subs, id)
		n.mu.Unlock()
	}
}

func (n *notifier) fire(name string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.waiters[name]; ok {
		close(ch)
		delete(n.waiters, name)
	}
	for _, fn := range n.subs {
		fn(name)
	}
}
