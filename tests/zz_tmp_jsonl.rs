use ternlm::gguf::SplitSet;
use ternlm::tokenizer::Tokenizer;
#[test]
fn jsonl() {
    for (m, f) in [("SmolLM2-135M-Instruct.Q4_1", ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"), ("gemma-3-270m-q4_k_m", ".cache/models/gemma-3-270m-q4_k_m.gguf")] {
        let set = SplitSet::open(std::path::Path::new(f)).unwrap();
        let tok = Tokenizer::from_metadata(set.metadata()).unwrap();
        let txt = std::fs::read_to_string(format!("tests/data/tokenizer/{m}.jsonl")).unwrap();
        let (mut ok, mut bad) = (0, 0);
        for l in txt.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let text = v["text"].as_str().unwrap();
            let sp = v["special"].as_bool().unwrap();
            let want: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            let got = tok.encode(text, sp, sp);
            let mut good = got == want;
            if v.get("detok_hex").is_none() {
                let d = if sp { tok.decode(&want, true, true).unwrap() } else { tok.decode(&want, false, false).unwrap() };
                if d != v["detok"].as_str().unwrap() { good = false; eprintln!("{m} detok {text:?}: {d:?} vs {:?}", v["detok"]); }
                if sp { let d = tok.decode(&want, false, false).unwrap(); if d != v["detok_plain"].as_str().unwrap() { good=false; eprintln!("{m} plain {text:?}"); } }
            }
            if good { ok += 1 } else { bad += 1; eprintln!("{m} {sp} {text:?}\n {want:?}\n {got:?}"); }
        }
        eprintln!("{m}: {ok} ok {bad} bad");
    }
}
