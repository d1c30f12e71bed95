package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// dockerfileReport is a Dockerfile as BuildKit's parser reads it: the
// global ARGs (before the first FROM) and each stage's instructions.
type dockerfileReport struct {
	Args   []argReport   `json:"args"`
	Stages []stageReport `json:"stages"`
}

type argReport struct {
	Name       string `json:"name"`
	Default    string `json:"default,omitempty"`
	HasDefault bool   `json:"hasDefault"`
}

type stageReport struct {
	From         string              `json:"from"`
	Name         string              `json:"name,omitempty"`
	Instructions []instructionReport `json:"instructions"`
}

type instructionReport struct {
	Cmd   string   `json:"cmd"` // lower case, as the parser gives it
	Flags []string `json:"flags,omitempty"`
	Args  []string `json:"args"`
	JSON  bool     `json:"json"` // exec form (["a", "b"])
}

// parseDockerfile reads path with BuildKit's Dockerfile parser.
func parseDockerfile(path string) (*dockerfileReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	rep := &dockerfileReport{Args: []argReport{}, Stages: []stageReport{}}
	for _, n := range res.AST.Children {
		ins := instructionReport{Cmd: strings.ToLower(n.Value), Flags: n.Flags, Args: []string{}, JSON: n.Attributes["json"]}
		for a := n.Next; a != nil; a = a.Next {
			ins.Args = append(ins.Args, a.Value)
		}
		switch {
		case ins.Cmd == "from":
			st := stageReport{Instructions: []instructionReport{}}
			if len(ins.Args) > 0 {
				st.From = ins.Args[0]
			}
			if len(ins.Args) == 3 && strings.EqualFold(ins.Args[1], "as") {
				st.Name = ins.Args[2]
			}
			rep.Stages = append(rep.Stages, st)
		case len(rep.Stages) == 0 && ins.Cmd == "arg":
			for _, a := range ins.Args {
				k, v, ok := strings.Cut(a, "=")
				rep.Args = append(rep.Args, argReport{Name: k, Default: v, HasDefault: ok})
			}
		case len(rep.Stages) == 0:
			return nil, fmt.Errorf("%s: %s before the first FROM", path, n.Original)
		default:
			last := &rep.Stages[len(rep.Stages)-1]
			last.Instructions = append(last.Instructions, ins)
		}
	}
	return rep, nil
}
