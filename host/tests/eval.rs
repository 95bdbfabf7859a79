//! `host eval` against the real runner and the real chat component, keyless, over the sample
//! book indexed by the real ingester under a `baseUrl` (so page paths match by suffix).

mod support;

use host::eval::{evaluate, parse_questions, shortfalls, summarise};
use support::{start, Options, Server};

const QUESTIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../eval/book.jsonl");

async fn book_server(variables: &[(&str, &str)]) -> Server {
    start(Options {
        variables,
        data_dir: Some(support::data_dir_with_book_index().await),
        ..Options::default()
    })
    .await
}

fn questions() -> Vec<host::eval::Question> {
    parse_questions(&std::fs::read_to_string(QUESTIONS).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_book_set_keeps_its_figures_through_chat() {
    let server = book_server(&[]).await;
    let questions = questions();
    let rows = evaluate(&server.base_url, &questions, 5).await.unwrap();
    assert_eq!(rows.len(), questions.len());
    let summary = summarise(&rows, 5);
    assert_eq!((summary.answerable, summary.off_topic), (24, 11));
    assert_eq!(summary.off_topic_refused, 11, "{rows:#?}");
    assert!(summary.recall_at_k >= 0.85, "{summary:?}");
    assert!(summary.mrr > 0.8, "{summary:?}");
    assert_eq!(summary.uncited, 0, "every extractive answer cites");
    assert!(shortfalls(&summary, Some(0.85), Some(0.93)).is_empty());
    let zmp = rows.iter().find(|r| r.id == "tipping-over").unwrap();
    assert_eq!(zmp.rank, Some(1), "{zmp:?}");
    assert!(zmp.sources[0]
        .url
        .starts_with("https://example.github.io/physical-ai-book/docs/locomotion/balance"));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_coverage_gate_off_topic_questions_are_answered() {
    // What the gate is for: with it at 0, passages sharing any word are quoted.
    let server = book_server(&[("keyword_min_coverage", "0")]).await;
    let rows = evaluate(&server.base_url, &questions(), 5).await.unwrap();
    let summary = summarise(&rows, 5);
    assert!(summary.off_topic_refused <= 1, "{summary:?}");
    assert!(!shortfalls(&summary, Some(0.85), Some(0.93)).is_empty());
}
